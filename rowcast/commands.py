"""Subcommands beyond database management: the servers, tokens and `tail`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rowcast import jsonexact, workers
from rowcast import web as web_page
from rowcast.api import app as api_app
from rowcast.args import command, listen_flag, serve_flags, settings_from_args
from rowcast.auth import issue_token
from rowcast.client import ResyncRequired, SubscriptionError, default_url, subscribe
from rowcast.database import connect, connect_supported, migration_errors, resolve_url, run_database
from rowcast.db import demo as demo_tables
from rowcast.db import migrate, queries, roles
from rowcast.embedded import binary
from rowcast.errors import ConfigError, RowcastError, Unreachable
from rowcast.serving import check_port, run_app
from rowcast.settings import Settings, from_env, parse_duration


def _settings(args: argparse.Namespace, auth_default: str) -> Settings:
    settings = settings_from_args(args, auth=auth_default)
    tables = (*settings.api_tables, *(getattr(args, "table", None) or ()))
    return settings.replace(
        workers=getattr(args, "workers", None),
        api_tables=tables,
        api_tables_file=getattr(args, "tables_file", None),
    )


def _table_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--table",
        action="append",
        metavar="TABLE",
        help='also serve TABLE on the REST API, e.g. orders or sales."Q1"; repeatable '
        "(adds to $ROWCAST_API_TABLES). It needs a primary key.",
    )
    parser.add_argument(
        "--tables-file",
        type=Path,
        metavar="FILE",
        help="JSON declaring served tables and their filter, sort and read_only columns "
        "($ROWCAST_API_TABLES_FILE); see README 'Serving your own tables'",
    )


# -- servers -----------------------------------------------------------------------------------


def _with_database(settings: Settings) -> Settings:
    """The servers are given a DSN: DATABASE_URL (or the PG* variables), else the embedded
    Postgres, started here if it is not running (and left running, as `rowcast db start`)."""
    check_port(settings.host, settings.port)  # before starting anything
    return settings.replace(database_url=resolve_url(settings))


def cmd_api(args: argparse.Namespace) -> int:
    settings = _with_database(_settings(args, "token"))
    app = api_app.create_app(settings)
    web_page.setup(app, settings)  # the page at /, as docker-compose.yml's proxy routes it here
    return run_app(
        app, settings, lambda: print(f"rowcast api on http://{settings.host}:{settings.port}/api", flush=True)
    )


def cmd_notifier(args: argparse.Namespace) -> int:
    settings = _with_database(_settings(args, "token"))
    return workers.serve(
        "rowcast.notifier.app:create_app",
        settings,
        lambda: print(f"rowcast notifier on http://{settings.host}:{settings.port}", flush=True),
    )


def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings(args, "open")
    check_port(settings.host, settings.port)
    with run_database(settings) as (url, started_embedded):
        code = _serve_up(settings.replace(database_url=url), args.demo)
    print(f"rowcast stopped{_left_running(settings, started_embedded)}", flush=True)
    return code


def _left_running(settings: Settings, started_embedded: bool) -> str:
    if not started_embedded:
        return ""
    if settings.keep_db:
        stop = shlex.join(["rowcast", "db", "stop", "--data-dir", str(settings.data_dir)])
        return f"; the embedded Postgres keeps running (ROWCAST_KEEP_DB=1): {stop} stops it"
    return "; embedded Postgres stopped"


def _serve_up(settings: Settings, demo: bool) -> int:
    """The quick start: roles, migrations and the demo tables, then serve until stopped, on
    `settings.database_url`. Each step that creates something says so."""
    url = settings.database_url or ""
    connect_supported(url, "rowcast-up")  # one line if not, before Alembic's traceback could
    with connect(url, "rowcast-up") as conn:
        created = roles.install(conn)
        if created:
            print(roles.describe(created))
    with migration_errors():
        for note in migrate.upgrade(url):
            print(note)
    with connect(url, "rowcast-up") as conn:
        if settings.wake_mode:
            queries.set_wake_mode(conn, settings.wake_mode)
        made = demo_tables.install(conn)
        if made:
            print(f"demo: created {', '.join('public.' + t for t in made)} (rowcast demo remove drops them)")
        if demo:
            _seed(conn)
    return workers.serve("rowcast.server:create_app", settings, lambda: _up_banner(settings))


def _up_banner(settings: Settings) -> None:
    page = f"http://{settings.host}:{settings.port}/"
    # The bundled psql: there whatever the machine has installed. Quoted: the embedded URL ends
    # in ?passfile=..., and `?` is a glob character to a shell.
    psql = shlex.join([str(binary("psql")), settings.database_url or ""])
    print(f"rowcast is up: {page}", flush=True)
    if settings.auth == "open":
        print(
            "auth: open — anyone who can reach this port can read and write (ROWCAST_AUTH=token to lock it)"
        )
    print(f"psql:  {psql}")
    print("       INSERT INTO books (title, author) VALUES ('Typed in psql', 'A DBA');")
    print(
        f"curl:  curl -s -X POST {page}api/books -H 'Content-Type: application/json' "
        '-d \'{"title": "From curl", "author": "me"}\''
    )
    print("Ctrl-C to stop.", flush=True)


DEMO_BOOKS = [
    ("The Left Hand of Darkness", "Ursula K. Le Guin", 304),
    ("Dune", "Frank Herbert", 412),
    ("Kindred", "Octavia E. Butler", 264),
    ("The Dispossessed", "Ursula K. Le Guin", 387),
]


def _seed(conn: Any) -> None:
    """A few books, once: only into an empty table that never had any."""
    row = conn.execute(queries.sql("demo_books_ever_written")).fetchone()
    if row == (0, 0):
        with conn.transaction():
            conn.execute("SELECT set_config('rowcast.actor', 'rowcast up --demo', true)")
            for title, author, pages in DEMO_BOOKS:
                conn.execute(
                    "INSERT INTO books (title, author, num_pages) VALUES (%s, %s, %s)", (title, author, pages)
                )
        print(f"seeded {len(DEMO_BOOKS)} demo books")


# -- token ---------------------------------------------------------------------------------------


def split(values: list[str] | None) -> list[str] | None:
    """Repeated and comma-separated flag values, flattened."""
    return None if values is None else [t for v in values for t in v.split(",") if t]


MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash


def cmd_token(args: argparse.Namespace) -> int:
    settings = from_env(auth="open")
    secret = settings.jwt_secret
    if not secret:
        raise ConfigError("ROWCAST_JWT_SECRET must be set to issue tokens")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"ROWCAST_JWT_SECRET is {len(secret.encode())} bytes: HS256 needs at least {MIN_SECRET_BYTES} "
            "(e.g. python3 -c 'import secrets; print(secrets.token_hex(32))')"
        )
    token = issue_token(
        secret,
        args.sub,
        read=split(args.read),
        write=split(args.write) if args.write is not None else [],
        scopes=args.scope or [],
        metrics=args.metrics,
        ttl=parse_duration(args.ttl),
        audience=settings.jwt_audience,
    )
    print(token)
    return 0


# -- tail ----------------------------------------------------------------------------------------


def parse_where(text: str | None) -> dict[str, Any] | None:
    """JSON (`{"owner": {"eq": "alice"}}`) or `col=value,col2=value` shorthand for eq."""
    if not text:
        return None
    if text.lstrip().startswith("{"):
        try:
            parsed = jsonexact.loads(text)  # numbers exactly as typed
        except ValueError as exc:
            raise RowcastError(f"--where is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise RowcastError("--where must be a JSON object")
        return parsed
    where: dict[str, Any] = {}
    for part in text.split(","):
        column, sep, raw = part.partition("=")
        if not sep:
            raise RowcastError(f"--where: expected COLUMN=VALUE, got {part!r}")
        value: Any = int(raw) if raw.lstrip("-").isdigit() else raw
        where[column.strip()] = {"eq": value}
    return where


def format_change(change: Any) -> str:
    if getattr(change, "error", None):  # rowcast.client could not have the row (docs/PROTOCOL.md)
        pk = ",".join(f"{k}={v}" for k, v in (change.pk or {}).items())
        return f"--:--:--  {change.op.upper():8} {change.table} {pk}  ({change.error}: row not shown)"
    at = datetime.fromisoformat(change.at).astimezone().strftime("%H:%M:%S")
    actor = change.actor or {}
    who = actor.get("actor") or actor.get("user") or "?"
    via = actor.get("app") or "?"
    pk = ",".join(f"{k}={v}" for k, v in (change.pk or {}).items())
    if change.op == "update":
        detail = " ".join(f"{k}: {change.old[k]!r}→{(change.row or {}).get(k)!r}" for k in (change.old or {}))
    elif change.op == "insert":
        detail = " ".join(f"{k}={v!r}" for k, v in (change.row or {}).items() if k not in (change.pk or {}))
    else:
        detail = ""
    moved = f" ({change.moved})" if change.moved else ""
    return f"{at}  {change.op.upper():8} {change.table} {pk}{moved}  by {who} via {via}  {detail}".rstrip()


def check_notifier_url(url: str, shown: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise ConfigError(f"{shown} is not a notifier URL: use http(s)://HOST:PORT or ws(s)://HOST:PORT")


HINT = "is `rowcast up` (or `rowcast notifier`) running there? set --url or ROWCAST_URL"


@dataclasses.dataclass
class Patience:
    """tail's view of its connection: a ready line when live, one line when it is lost, and an
    Unreachable error once nothing has answered for `give_up` seconds (None: never)."""

    url: str
    table: str
    give_up: float | None
    json: bool
    down_since: float | None = dataclasses.field(default_factory=time.monotonic)
    told: bool = False

    def status(self, state: str, cursor: str | None) -> None:
        if state == "live":
            self.down_since, self.told = None, False
            self._ready(cursor)
        elif state == "reconnecting":
            self._down()

    def _ready(self, cursor: str | None) -> None:
        if self.json:
            ready = {"type": "ready", "url": self.url, "table": self.table, "cursor": cursor}
            print(jsonexact.dumps(ready), flush=True)
        else:
            print(f"-- live ({self.url})", file=sys.stderr, flush=True)

    def _down(self) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            if not self.json:
                print(f"-- reconnecting ({self.url})", file=sys.stderr, flush=True)
        if self.give_up is not None and now - self.down_since >= self.give_up:
            raise Unreachable(f"no rowcast notifier answered at {self.url} for {self.give_up:g}s: {HINT}")
        if self.give_up is None and not self.told:
            self.told = True
            print(f"-- no answer at {self.url} yet, retrying: {HINT}", file=sys.stderr, flush=True)


def cmd_tail(args: argparse.Namespace) -> int:
    from_env(auth="open")  # the environment every command reads must be valid
    url = args.url or default_url()
    source = "--url" if args.url else "ROWCAST_URL" if os.environ.get("ROWCAST_URL") else "ROWCAST_HOST"
    check_notifier_url(url, f"{source} {url!r}")
    token = args.token or os.environ.get("ROWCAST_TOKEN")
    where = parse_where(args.where)
    give_up = None if args.retry_forever else parse_duration(args.give_up_after)
    patience = Patience(url, args.table, give_up, args.json)
    logging.getLogger("rowcast.client").setLevel(logging.ERROR)  # tail says it itself, once

    async def run() -> None:
        async for change in subscribe(
            url, args.table, where=where, cursor=args.cursor, token=token, on_status=patience.status
        ):
            if args.json:
                # Decimal stays a JSON number, exactly as Postgres wrote it.
                print(jsonexact.dumps({"type": "change", **change.__dict__}, default=str), flush=True)
            else:
                print(format_change(change), flush=True)

    try:
        asyncio.run(run())
    except SubscriptionError as exc:
        raise RowcastError(str(exc)) from None
    except ResyncRequired as exc:
        raise RowcastError(f"the cursor is too old ({exc}); run again without --cursor") from None
    except KeyboardInterrupt:
        return 0
    return 0


# -- registration ------------------------------------------------------------------------------


TAIL_DETAILS = (
    "Connects to the notifier at --url, else $ROWCAST_URL, else http://$ROWCAST_HOST:$ROWCAST_PORT "
    "(default http://127.0.0.1:8080). Prints a ready line when subscribed (--json: "
    '{"type": "ready", ...} on stdout; else "-- live (URL)" on stderr), then one line per change. '
    "Exit status 1 when nothing answers for --give-up-after, 2 when the server refuses the "
    "subscription (unknown table or column, bad token), 0 on Ctrl-C."
)


def _workers_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes serving the port ($ROWCAST_WORKERS, default: cores)",
    )


def register(sub: Any) -> None:
    p = command(
        sub,
        "up",
        cmd_up,
        "run api + notifier + web page on one port (embedded Postgres if none)",
        "Creates rowcast's roles if missing, migrates, installs and captures the demo tables "
        "books and authors (rowcast demo install), and prints the page URL and a psql line. "
        "Auth is open unless ROWCAST_AUTH=token. Ctrl-C or SIGTERM stops it (exit status 0).",
    )
    serve_flags(p)
    listen_flag(p)
    p.add_argument("--demo", action="store_true", help="seed a few demo books (once)")
    _workers_flag(p)
    _table_flag(p)

    p = command(
        sub,
        "api",
        cmd_api,
        "run the REST API (production: token auth by default)",
        "It serves the demo tables and those named by --table, $ROWCAST_API_TABLES or --tables-file, reflected "
        "from the database when it starts; a table it cannot serve stops it with exit status 2.",
    )
    serve_flags(p)
    _table_flag(p)

    p = command(
        sub, "notifier", cmd_notifier, "run the notifier: /ws, /sse, /changes (token auth by default)"
    )
    serve_flags(p)
    listen_flag(p)
    _workers_flag(p)

    p = command(
        sub,
        "token",
        cmd_token,
        "issue a JWT for the API and the notifier ($ROWCAST_JWT_SECRET)",
        "The secret must be at least 32 bytes (exit status 2 otherwise).",
    )
    p.add_argument("--sub", required=True, help="subject (user id)")
    p.add_argument(
        "--read", action="append", help="readable table(s); repeat or comma-separate (default: all)"
    )
    p.add_argument("--write", action="append", help="writable table(s) (default: none)")
    p.add_argument(
        "--scope",
        action="append",
        help="row scope; repeatable. TABLE.COLUMN=TEXT is always text (owner=00123 is the string "
        '"00123"); TABLE.COLUMN:=JSON takes a JSON value (owner_id:=42, active:=true, owner:=null)',
    )
    p.add_argument("--metrics", action="store_true", help="may read the notifier's /metrics")
    p.add_argument("--ttl", default="1h", help="lifetime, e.g. 15m, 1h, 7d (default 1h)")

    p = command(sub, "tail", cmd_tail, "watch a table's changes live in the terminal", TAIL_DETAILS)
    p.add_argument("table")
    p.add_argument("--where", help='filter: JSON {"col": {"op": value}} or col=value,col2=value')
    p.add_argument("--cursor", help="resume from this cursor")
    p.add_argument("--json", action="store_true", help="one JSON line per event")
    p.add_argument("--url", help="notifier URL ($ROWCAST_URL, default http://$ROWCAST_HOST:$ROWCAST_PORT)")
    p.add_argument("--token", help="token ($ROWCAST_TOKEN)")
    patience = p.add_mutually_exclusive_group()
    patience.add_argument(
        "--give-up-after",
        default="10s",
        metavar="DURATION",
        help="exit (status 1) when nothing has answered for this long (default 10s)",
    )
    patience.add_argument("--retry-forever", action="store_true", help="never give up: keep reconnecting")


REGISTRY: list[Callable[[Any], None]] = [register]
