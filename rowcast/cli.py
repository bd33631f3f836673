"""The `rowcast` command line. Errors are one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rowcast import __version__, names
from rowcast.errors import RowcastError
from rowcast.settings import Settings, from_env, parse_duration

Handler = Callable[[argparse.Namespace], int]


def settings_from_args(args: argparse.Namespace, **defaults: Any) -> Settings:
    """Settings from the environment, then the command's defaults, then its flags."""
    overrides = {**defaults}
    for name in ("host", "port", "database_url", "data_dir", "auth"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    env_auth = os.environ.get("ROWCAST_AUTH")
    if env_auth and getattr(args, "auth", None) is None:
        overrides["auth"] = env_auth
    return from_env(**overrides)


def _connect(settings: Settings) -> Any:
    import psycopg

    from rowcast.database import resolve_url

    try:
        return psycopg.connect(resolve_url(settings), autocommit=True, application_name="rowcast-cli")
    except psycopg.OperationalError as exc:
        raise RowcastError(f"cannot connect to Postgres: {str(exc).strip().splitlines()[0]}") from None


# -- db ----------------------------------------------------------------------------------------


def cmd_db(args: argparse.Namespace) -> int:
    from rowcast.database import embedded

    settings = settings_from_args(args, auth="open")
    if settings.database_url is not None and args.action in ("start", "stop"):
        raise RowcastError("DATABASE_URL is set: `rowcast db start|stop` manage only the embedded Postgres")
    server = embedded(settings)
    if args.action == "start":
        started = server.start()
        print(f"embedded Postgres {'started' if started else 'already running'}: {server.url()}")
    elif args.action == "stop":
        print("embedded Postgres stopped" if server.stop() else "embedded Postgres was not running")
    elif args.action == "status":
        if settings.database_url is not None:
            print("using DATABASE_URL (no embedded Postgres)")
            return 0
        running = server.is_running()
        print(
            f"embedded Postgres in {server.data_dir}: {'running on ' + server.url() if running else 'stopped'}"
        )
        return 0 if running else 3
    elif args.action == "url":
        from rowcast.database import resolve_url

        print(resolve_url(settings, start=False))
    elif args.action == "psql":
        from rowcast.database import resolve_url
        from rowcast.embedded import binary

        url = resolve_url(settings)
        psql = str(binary("psql"))
        os.execv(psql, [psql, url, *args.psql_args])  # noqa: S606 -- hand the terminal to psql
    return 0


# -- migrate / capture / prune ------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    from db import migrate
    from rowcast.database import resolve_url

    settings = settings_from_args(args, auth="open")
    url = resolve_url(settings)
    if args.downgrade:
        migrate.downgrade(url, args.downgrade)
        print(f"downgraded to {args.downgrade}")
    else:
        migrate.upgrade(url, args.revision)
        print(f"migrated to {args.revision}")
        if os.environ.get("ROWCAST_WAKE_MODE"):
            with _connect(settings) as conn:
                print(conn.execute("SELECT rowcast.set_wake_mode(%s)", (settings.wake_mode,)).fetchone()[0])
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    from db import capture

    with _connect(settings_from_args(args, auth="open")) as conn:
        if args.action == "enable":
            for table in args.tables:
                print(capture.enable(conn, table))
            return 0
        if args.action == "disable":
            for table in args.tables:
                print(capture.disable(conn, table))
            return 0
        tables = args.tables or [None]
        statuses = [s for t in tables for s in capture.status(conn, t)]
        for s in statuses:
            print(f"{names.canonical(s.schema, s.table)}\t{s.status}\t{s.detail}")
        if args.action == "verify":
            bad = [s for s in statuses if not s.ok]
            if bad:
                print(f"{len(bad)} table(s) need attention", file=sys.stderr)
                return 1
            if not statuses:
                print("no captured tables")
        return 0


def cmd_wake_mode(args: argparse.Namespace) -> int:
    with _connect(settings_from_args(args, auth="open")) as conn:
        if args.mode is None:
            print(conn.execute("SELECT rowcast.wake_mode()").fetchone()[0])
        else:
            print(conn.execute("SELECT rowcast.set_wake_mode(%s)", (args.mode,)).fetchone()[0])
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from db import capture

    with _connect(settings_from_args(args, auth="open")) as conn:
        removed, xid = capture.prune(conn, parse_duration(args.older_than))
    print(f"removed {removed} change(s) older than {args.older_than}; highest pruned xid: {xid or 'none'}")
    return 0


# -- parser ------------------------------------------------------------------------------------


def add_db_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url", dest="database_url", help="Postgres URL (default: $DATABASE_URL or embedded)"
    )
    parser.add_argument("--data-dir", dest="data_dir", help="embedded Postgres data dir ($ROWCAST_DATA_DIR)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rowcast", description="Every Postgres row change as a live event.")
    parser.add_argument("--version", action="version", version=f"rowcast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("db", help="manage the embedded Postgres")
    p.add_argument("action", choices=["start", "stop", "status", "url", "psql"])
    p.add_argument("psql_args", nargs=argparse.REMAINDER, help="extra arguments for psql")
    add_db_flags(p)
    p.set_defaults(handler=cmd_db)

    p = sub.add_parser("migrate", help="run database migrations (Alembic upgrade head)")
    p.add_argument("revision", nargs="?", default="head")
    p.add_argument("--downgrade", metavar="REVISION", help="downgrade to REVISION instead (e.g. base)")
    add_db_flags(p)
    p.set_defaults(handler=cmd_migrate)

    p = sub.add_parser("capture", help="enable, disable, list or verify capture on tables")
    p.add_argument("action", choices=["enable", "disable", "list", "verify"])
    p.add_argument("tables", nargs="*", metavar="TABLE", help="schema.table (default schema: public)")
    add_db_flags(p)
    p.set_defaults(handler=cmd_capture)

    p = sub.add_parser("wake-mode", help="show or set the database's wake-up mode (notify | coalesced)")
    p.add_argument("mode", nargs="?", choices=["notify", "coalesced"])
    add_db_flags(p)
    p.set_defaults(handler=cmd_wake_mode)

    p = sub.add_parser("prune", help="remove old events from the change log")
    p.add_argument("--older-than", default="24h", help="age to keep, e.g. 24h, 7d (default 24h)")
    add_db_flags(p)
    p.set_defaults(handler=cmd_prune)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list[Callable[[Any], None]]:
    """Commands that live in their own modules (servers, tail, token)."""
    from rowcast import commands

    return commands.REGISTRY


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "capture" and args.action in ("enable", "disable") and not args.tables:
        parser.error(f"capture {args.action} needs at least one TABLE")
    logging.basicConfig(
        level=os.environ.get("ROWCAST_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if logging.getLogger().level > logging.DEBUG:
        # Migration chatter is not news to someone starting rowcast.
        logging.getLogger("alembic").setLevel(logging.WARNING)
    handler: Handler = args.handler
    try:
        return handler(args)
    except RowcastError as exc:
        print(f"rowcast: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a port taken between our check and the bind
        print(f"rowcast: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
