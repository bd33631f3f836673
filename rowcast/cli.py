"""The `rowcast` command line. Errors are one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import psycopg

from rowcast import __version__, names
from rowcast.errors import RowcastError
from rowcast.settings import Settings, from_env, parse_duration

Handler = Callable[[argparse.Namespace], int]


def settings_from_args(args: argparse.Namespace, **defaults: Any) -> Settings:
    """Settings from the environment, then the command's defaults, then its flags."""
    overrides = {**defaults}
    for name in ("host", "port", "database_url", "listen_url", "data_dir", "auth"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    env_auth = os.environ.get("ROWCAST_AUTH")
    if env_auth and getattr(args, "auth", None) is None:
        overrides["auth"] = env_auth
    return from_env(**overrides)


def _connect(settings: Settings) -> Any:
    from rowcast.database import connect, resolve_url

    return connect(resolve_url(settings), "rowcast-cli")


# -- db ----------------------------------------------------------------------------------------


def cmd_db(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, auth="open")
    if settings.database_url is not None and args.action in ("start", "stop"):
        raise RowcastError("DATABASE_URL is set: `rowcast db start|stop` manage only the embedded Postgres")
    return DB_ACTIONS[args.action](settings, args)


def _db_start(settings: Settings, args: argparse.Namespace) -> int:
    from rowcast.database import embedded

    server = embedded(settings)
    started = server.start()
    print(f"embedded Postgres {'started' if started else 'already running'}: {server.url()}")
    return 0


def _db_stop(settings: Settings, args: argparse.Namespace) -> int:
    from rowcast.database import embedded

    print("embedded Postgres stopped" if embedded(settings).stop() else "embedded Postgres was not running")
    return 0


def _db_status(settings: Settings, args: argparse.Namespace) -> int:
    from rowcast.database import embedded

    if settings.database_url is not None:
        print("using DATABASE_URL (no embedded Postgres)")
        return 0
    server = embedded(settings)
    running = server.is_running()
    print(f"embedded Postgres in {server.data_dir}: {'running on ' + server.url() if running else 'stopped'}")
    return 0 if running else 3


def _db_url(settings: Settings, args: argparse.Namespace) -> int:
    from rowcast.database import resolve_url

    print(resolve_url(settings, start=False))
    return 0


def _db_psql(settings: Settings, args: argparse.Namespace) -> int:
    from rowcast.database import connect, resolve_url
    from rowcast.embedded import binary

    url = resolve_url(settings)
    connect(url, "rowcast-cli").close()  # nothing answering is one line here, not psql's two
    psql = str(binary("psql"))
    os.execv(psql, [psql, url, *args.psql_args])  # noqa: S606 -- hand the terminal to psql


DB_ACTIONS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "start": _db_start,
    "stop": _db_stop,
    "status": _db_status,
    "url": _db_url,
    "psql": _db_psql,
}


# -- migrate / capture / prune ------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    from db import migrate
    from rowcast.database import connect_supported, migration_errors, resolve_url

    settings = settings_from_args(args, auth="open")
    url = resolve_url(settings)
    connect_supported(url, "rowcast-migrate")  # one line if not, before Alembic's traceback could
    if args.roles:
        _install_roles(settings, owner=None)
    with migration_errors():
        if args.downgrade:
            _say(migrate.downgrade(url, args.downgrade))
            print(f"downgraded to {args.downgrade}")
            return 0
        _say(migrate.upgrade(url, args.revision))
    print(f"migrated to {args.revision}: {MIGRATE_SCOPE}")
    if os.environ.get("ROWCAST_WAKE_MODE"):
        with _connect(settings) as conn:
            print(conn.execute("SELECT rowcast.set_wake_mode(%s)", (settings.wake_mode,)).fetchone()[0])
    return 0


MIGRATE_SCOPE = (
    "schema rowcast only, its history in rowcast.alembic_version; nothing in public, no demo tables "
    "(rowcast demo install), roles used but not created (rowcast roles install)"
)


def _say(notes: list[str]) -> None:
    for note in notes:
        print(note)


def _install_roles(settings: Settings, owner: str | None) -> None:
    from db import roles

    with _connect(settings) as conn:
        print(roles.describe(roles.install(conn, owner)))


def cmd_roles(args: argparse.Namespace) -> int:
    """Roles are cluster-wide, so they are their own step, run by whoever may create roles."""
    _install_roles(settings_from_args(args, auth="open"), args.owner)
    if args.owner:
        print(f"{args.owner} may now run `rowcast migrate` (member of rowcast_capture WITH ADMIN OPTION)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from db import demo

    with _connect(settings_from_args(args, auth="open")) as conn:
        if args.action == "install":
            created = demo.install(conn)
            print(
                f"demo: {_listed('created', created) or 'tables already there'}; books and authors captured"
            )
        else:
            print(f"demo: {_listed('dropped', demo.remove(conn)) or 'no demo tables to drop'}")
    return 0


def _listed(done: str, tables: list[str]) -> str:
    return f"{done} " + ", ".join(f"public.{t}" for t in tables) if tables else ""


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


EXIT_CODES = """exit status:
  0    done
  1    a check failed (capture verify), nothing answered (Postgres, the notifier for tail),
       or Postgres refused what was asked
  2    usage or configuration error: unknown flag, bad value or DATABASE_URL, port in use
  3    db status: the embedded Postgres is stopped
  130  interrupted"""


class Parser(argparse.ArgumentParser):
    """Usage errors in one line: what is wrong, and where the help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def add_db_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url", dest="database_url", help="Postgres URL (default: $DATABASE_URL or embedded)"
    )
    parser.add_argument(
        "--data-dir", dest="data_dir", type=Path, help="embedded Postgres data dir ($ROWCAST_DATA_DIR)"
    )


def command(
    sub: Any, name: str, handler: Handler, summary: str, details: str = ""
) -> argparse.ArgumentParser:
    """A subcommand whose --help says what it does (and, in `details`, its exit status)."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {details}".strip()
    )
    parser.set_defaults(handler=handler, parser=parser)
    return parser


DB_HELP = {
    "start": ("initialise (first time) and start the embedded Postgres", "Prints its URL."),
    "stop": ("stop the embedded Postgres", ""),
    "status": ("say whether the embedded Postgres runs", "Exit status 3 when it is stopped."),
    "url": ("print the database URL rowcast uses (psql and psycopg accept it)", ""),
    "psql": (
        "open the bundled psql on the database",
        "Arguments for psql go after --, e.g. rowcast db psql -- -c 'SELECT 1'.",
    ),
}

CAPTURE_HELP = {
    "enable": ("capture TABLE's changes (installs the trigger; idempotent)", ""),
    "disable": ("stop capturing TABLE (its logged changes stay)", ""),
    "list": ("list captured tables (or the ones named) with their trigger's status", ""),
    "verify": (
        "like list, and check every trigger is installed and current",
        "Exit status 1 when a table needs attention (rowcast capture enable TABLE repairs it).",
    ),
}


def add_db_command(sub: Any) -> None:
    p = sub.add_parser("db", help="manage the embedded Postgres", description="Manage the embedded Postgres.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, (summary, details) in DB_HELP.items():
        action = command(actions, name, cmd_db, summary, details)
        add_db_flags(action)
        if name == "psql":
            action.add_argument("psql_args", nargs="*", metavar="-- PSQL_ARG", help="arguments for psql")


DEMO_HELP = {
    "install": ("create the demo tables public.books and public.authors and capture them (idempotent)", ""),
    "remove": ("drop the demo tables, their rows and their capture", ""),
}


def add_demo_command(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="install or remove the demo tables books and authors",
        description="The demo tables the live page shows; `rowcast migrate` never creates them. "
        "Exit status 2 when a table of that name exists and is not the demo's.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, (summary, details) in DEMO_HELP.items():
        add_db_flags(command(actions, name, cmd_demo, summary, details))


def add_capture_command(sub: Any) -> None:
    p = sub.add_parser(
        "capture",
        help="enable, disable, list or verify capture on tables",
        description='Manage capture. TABLE is read as Postgres reads names: books, audit.log, co."x.y".',
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, (summary, details) in CAPTURE_HELP.items():
        action = command(actions, name, cmd_capture, summary, details)
        needed = "+" if name in ("enable", "disable") else "*"
        action.add_argument(
            "tables", nargs=needed, metavar="TABLE", help="schema.table (default schema: public)"
        )
        add_db_flags(action)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="rowcast",
        description="Every Postgres row change as a live event.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rowcast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_db_command(sub)

    p = command(
        sub,
        "migrate",
        cmd_migrate,
        "upgrade rowcast's schema in the database (Alembic), to the latest or to REVISION",
        "Installs only the schema rowcast (its Alembic history is rowcast.alembic_version, apart from "
        "your app's): nothing in public, no demo tables. Needs rowcast's roles (rowcast roles install "
        "or --roles). Exit status 2 for an unknown revision, a conflict or missing roles or rights.",
    )
    p.add_argument(
        "revision",
        nargs="?",
        default="head",
        help="Alembic revision to upgrade to (default: head, the latest)",
    )
    p.add_argument("--downgrade", metavar="REVISION", help="downgrade to REVISION instead (e.g. base)")
    p.add_argument(
        "--roles",
        action="store_true",
        help="first create rowcast's cluster-wide roles if missing (as `rowcast roles install`)",
    )
    add_db_flags(p)

    p = command(
        sub,
        "roles",
        cmd_roles,
        "create rowcast's roles once per Postgres server (rowcast_capture, rowcast_notifier, rowcast_app)",
        "Roles are cluster-wide: run it as a superuser or a role with CREATEROLE. Idempotent. "
        "--owner ROLE lets that login (no superuser) run `rowcast migrate`.",
    )
    p.add_argument("action", choices=["install"], help="install: create the roles that are missing")
    p.add_argument("--owner", metavar="ROLE", help="the login that will run `rowcast migrate`")
    add_db_flags(p)

    add_demo_command(sub)

    add_capture_command(sub)

    p = command(
        sub, "wake-mode", cmd_wake_mode, "show or set the database's wake-up mode (notify | coalesced)"
    )
    p.add_argument(
        "mode", nargs="?", choices=["notify", "coalesced"], help="the mode to set (default: show it)"
    )
    add_db_flags(p)

    p = command(
        sub,
        "prune",
        cmd_prune,
        "remove old events from the change log",
        "Only changes every running snapshot already sees; prints the highest xid removed.",
    )
    p.add_argument("--older-than", default="24h", help="age to keep, e.g. 24h, 7d (default 24h)")
    add_db_flags(p)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list[Callable[[Any], None]]:
    """Commands that live in their own modules (servers, tail, token)."""
    from rowcast import commands

    return commands.REGISTRY


def main(argv: Sequence[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # said by the subcommand that was given them, with its own --help
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
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
        return exc.exit_code
    except psycopg.Error as exc:  # what the server refused: its own first line
        print(f"rowcast: Postgres refused: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. a port taken between our check and the bind, a data dir not made
        where = f": {exc.filename}" if exc.filename else ""
        print(f"rowcast: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
