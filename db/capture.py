"""Capture management from Python: the same SQL functions a DBA calls from psql."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from rowcast import names
from rowcast.errors import CaptureError


@dataclass(frozen=True)
class TableStatus:
    schema: str
    table: str
    status: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _call(conn: psycopg.Connection[tuple[Any, ...]], function: str, table: str) -> str:
    try:
        key = names.qualify(table)  # Postgres's rules, and a clear refusal of `a.b.c`
    except names.BadName as exc:
        raise CaptureError(str(exc)) from None
    try:
        with conn.transaction():
            row = conn.execute(f"SELECT rowcast.{function}(%s::regclass)", (key,)).fetchone()
    except psycopg.errors.UndefinedTable:
        raise CaptureError(f"no such table: {table}") from None
    except psycopg.errors.InvalidSchemaName:
        raise CaptureError("rowcast is not installed in this database: run `rowcast migrate`") from None
    except psycopg.errors.UndefinedFunction:
        raise CaptureError("rowcast is not installed in this database: run `rowcast migrate`") from None
    except (psycopg.errors.RaiseException, psycopg.errors.ObjectNotInPrerequisiteState) as exc:
        message = (exc.diag.message_primary or str(exc)).removeprefix("rowcast: ")
        hint = f" ({exc.diag.message_hint})" if exc.diag.message_hint else ""
        raise CaptureError(f"{message}{hint}") from None
    assert row is not None
    return str(row[0])


def enable(conn: psycopg.Connection[tuple[Any, ...]], table: str) -> str:
    return _call(conn, "enable_capture", table)


def disable(conn: psycopg.Connection[tuple[Any, ...]], table: str) -> str:
    return _call(conn, "disable_capture", table)


def status(conn: psycopg.Connection[tuple[Any, ...]], table: str | None = None) -> list[TableStatus]:
    try:
        rows = conn.execute("SELECT * FROM rowcast.capture_status()").fetchall()
    except (psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedFunction):
        raise CaptureError("rowcast is not installed in this database: run `rowcast migrate`") from None
    found = [TableStatus(*map(str, row)) for row in rows]
    if table is None:
        return found
    try:
        schema, name = names.parse(table)
    except names.BadName as exc:
        raise CaptureError(str(exc)) from None
    matching = [s for s in found if (s.schema, s.table) == (schema, name)]
    return matching or [TableStatus(schema, name, "not_captured", "capture was never enabled")]


def prune(conn: psycopg.Connection[tuple[Any, ...]], older_than_seconds: float) -> tuple[int, str | None]:
    """Remove log rows older than the given age; returns (rows removed, highest xid ever pruned)."""
    with conn.transaction():
        row = conn.execute(
            "SELECT removed, pruned_xid::text FROM rowcast.prune(make_interval(secs => %s))",
            (older_than_seconds,),
        ).fetchone()
    assert row is not None
    return int(row[0] or 0), (str(row[1]) if row[1] is not None else None)
