"""Capture management from Python: the same SQL functions a DBA calls from psql."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from rowcast.db import queries

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


Conn = psycopg.Connection[tuple[Any, ...]]

# What the log last recorded about a table name that no longer exists: its DROP, or the RENAME
# that moved it away (and the table's current name, if it still exists).
_FATE = """
SELECT c.op, quote_ident(n.nspname) || '.' || quote_ident(k.relname)
  FROM rowcast.changes c
  LEFT JOIN pg_class k ON k.oid = c.relid
  LEFT JOIN pg_namespace n ON n.oid = k.relnamespace
 WHERE c.op IN ('schema', 'drop')
   AND CASE c.op WHEN 'drop' THEN (c.schema_name, c.table_name) = (%(schema)s, %(table)s)
       ELSE c.row -> 'renamed_from' = jsonb_build_object('schema', %(schema)s::text, 'table', %(table)s::text)
       END
 ORDER BY c.id DESC
 LIMIT 1
"""


def fate(conn: Conn, schema: str, table: str) -> tuple[str, str] | None:
    """Why `schema.table` names no table now, from the log's DDL records: (status, detail), where
    status is dropped or renamed; None if the log does not say."""
    try:
        with conn.transaction():
            row = conn.execute(_FATE, {"schema": schema, "table": table}).fetchone()
    except psycopg.Error:  # no rowcast, or no right to read the log: nothing to add
        return None
    if row is None:
        return None
    op, now = row
    if op == "drop":
        return "dropped", "the table was dropped, and its capture with it"
    return "renamed", (f"renamed to {now}: use that name" if now else "renamed, and since dropped")


def _call(conn: Conn, function: str, table: str) -> str:
    try:
        key = names.qualify(table)  # Postgres's rules, and a clear refusal of `a.b.c`
    except names.BadName as exc:
        raise CaptureError(str(exc)) from None
    try:
        with conn.transaction():
            row = conn.execute(f"SELECT rowcast.{function}(%s::regclass)", (key,)).fetchone()
    except (
        psycopg.errors.UndefinedTable,
        psycopg.errors.InvalidSchemaName,
        psycopg.errors.UndefinedFunction,
    ):
        installed = conn.execute("SELECT to_regproc(%s) IS NOT NULL", (f"rowcast.{function}",)).fetchone()
        if not (installed and installed[0]):
            raise CaptureError("rowcast is not installed in this database: run `rowcast migrate`") from None
        # The table, or its schema, is gone: say what the log knows (renamed or dropped).
        why = fate(conn, *names.parse(table))
        raise CaptureError(f"no such table: {table}" + (f" ({why[1]})" if why else "")) from None
    except (psycopg.errors.RaiseException, psycopg.errors.ObjectNotInPrerequisiteState) as exc:
        message = (exc.diag.message_primary or str(exc)).removeprefix("rowcast: ")
        hint = f" ({exc.diag.message_hint})" if exc.diag.message_hint else ""
        raise CaptureError(f"{message}{hint}") from None
    assert row is not None
    return str(row[0])


def enable(conn: Conn, table: str) -> str:
    return _call(conn, "enable_capture", table)


def disable(conn: Conn, table: str) -> str:
    return _call(conn, "disable_capture", table)


def status(conn: Conn, table: str | None = None) -> list[TableStatus]:
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
    if matching:
        return matching
    why = fate(conn, schema, name) or ("not_captured", "capture was never enabled")
    return [TableStatus(schema, name, *why)]


def prune(conn: Conn, older_than_seconds: float) -> tuple[int, str | None]:
    """Remove log rows older than the given age, after any prune a notifier is running; returns
    (rows removed, highest xid ever pruned)."""
    done = queries.prune(conn, older_than_seconds, wait=True)
    assert done is not None
    return done
