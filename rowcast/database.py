"""Which Postgres rowcast talks to: the configured one, or the embedded one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import psycopg
from alembic.util import CommandError
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.exc import DBAPIError

from rowcast.embedded import EmbeddedPostgres
from rowcast.errors import ConfigError, RowcastError, Unreachable
from rowcast.settings import Settings


def embedded(settings: Settings) -> EmbeddedPostgres:
    return EmbeddedPostgres(settings.data_dir)


@contextlib.contextmanager
def run_database(settings: Settings) -> Iterator[tuple[str, bool]]:
    """The database a serving command runs on: `DATABASE_URL` (or the PG* variables), else the
    embedded Postgres, started here and stopped on exit unless `keep_db`.

    Yields (url, started): whether this command started the embedded server.
    """
    if settings.database_url is not None:
        yield resolve_url(settings), False
        return
    server = embedded(settings)
    started = server.start()
    try:
        yield server.url(), started
    finally:
        if started and not settings.keep_db:
            server.stop()


def resolve_url(settings: Settings, *, start: bool = True) -> str:
    """The libpq URL to use; with no database configured, the embedded server (started if asked)."""
    if settings.database_url is not None:
        return settings.database_url
    server = embedded(settings)
    if start:
        server.start()
    return server.url()


def connect(url: str, application_name: str) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection, or Unreachable saying in one line where and what to try."""
    try:
        return psycopg.connect(url, autocommit=True, application_name=application_name, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise Unreachable(
            f"cannot connect to Postgres at {address(url)}: {_reason(exc)}; "
            "is the server running? check DATABASE_URL (unset it for the embedded one)"
        ) from None


OLDEST_SUPPORTED = 130000  # the xid8 functions (pg_current_xact_id, pg_snapshot) came in 13


def require_supported(server_version: int) -> None:
    """Refuse a Postgres too old for rowcast's SQL (server_version as libpq reports it)."""
    if server_version < OLDEST_SUPPORTED:
        major, minor = divmod(server_version, 10000)
        raise ConfigError(
            f"Postgres {major}.{minor} is too old: rowcast needs 13 or later (the xid8 functions); "
            "tested on 15 and 18"
        )


def connect_supported(url: str, application_name: str) -> None:
    """Check, before migrating, that Postgres answers at `url` and is recent enough."""
    with connect(url, application_name) as conn:
        require_supported(conn.info.server_version)


def address(url: str) -> str:
    """host:port as libpq will try them (the PG* variables and its defaults filling the gaps)."""
    params = conninfo_to_dict(url)
    host = params.get("host") or os.environ.get("PGHOST") or "localhost"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    return f"{host}:{port}"


def _reason(exc: psycopg.OperationalError) -> str:
    first = str(exc).strip().splitlines()[0]
    return first.rpartition(" failed: ")[2].removeprefix("FATAL:").strip()


@contextlib.contextmanager
def migration_errors() -> Iterator[None]:
    """Alembic's failures as rowcast's: an unknown revision, or what Postgres refused (as psycopg
    raised it, for the CLI to say in one line)."""
    try:
        yield
    except CommandError as exc:
        raise RowcastError(f"migrate: {exc}") from None
    except DBAPIError as exc:
        if isinstance(exc.orig, psycopg.Error):
            raise exc.orig from None
        raise
