"""The named SQL statements of db/sql/queries.sql, and the few operations built on them that
more than one process runs (prune, the wake-up mode): one home for the database contract."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import psycopg
from rowcast.db import sqlfiles

_NAME = re.compile(r"^-- name: ([a-z_]+)\s*$", re.M)


_FRAGMENT = re.compile(r"\{\{([a-z_]+)\}\}")


@cache
def statements() -> dict[str, str]:
    """name -> statement text, without its comment lines; `{{name}}` inside a statement stands
    for the named fragment (e.g. the log columns every read selects)."""
    text = sqlfiles.read("queries.sql")
    parts = _NAME.split(text)[1:]
    found: dict[str, str] = {}
    for name, body in zip(parts[::2], parts[1::2], strict=True):
        if name in found:
            raise ValueError(f"queries.sql names {name!r} twice")
        lines = [line for line in body.splitlines() if line.strip() and not line.startswith("--")]
        found[name] = "\n".join(lines).strip().removesuffix(";")

    def expand(match: re.Match[str]) -> str:
        return found[match.group(1)]

    return {name: _FRAGMENT.sub(expand, statement) for name, statement in found.items()}


def sql(name: str) -> str:
    """The statement named `name` (KeyError names the missing one)."""
    try:
        return statements()[name]
    except KeyError:
        raise KeyError(f"queries.sql has no statement named {name!r}") from None


def prune(conn: psycopg.Connection[Any], older_than_seconds: float, *, wait: bool = True) -> tuple[int, str | None] | None:
    """Remove log rows older than the age, holding the prune lock; (rows removed, highest xid
    ever pruned), or None when `wait` is false and another process is pruning."""
    with conn.transaction():
        if wait:
            conn.execute(sql("prune_lock_wait"))
        else:
            locked = conn.execute(sql("prune_lock")).fetchone()
            if not locked or not locked[0]:
                return None
        row = conn.execute(sql("prune"), {"seconds": older_than_seconds}).fetchone()
    assert row is not None
    return int(row[0] or 0), (str(row[1]) if row[1] is not None else None)


async def prune_async(
    conn: psycopg.AsyncConnection[Any], older_than_seconds: float
) -> tuple[int, str | None] | None:
    """`prune` for the notifier: it never waits for the lock (another replica is pruning)."""
    async with conn.transaction():
        locked = await (await conn.execute(sql("prune_lock"))).fetchone()
        if not locked or not locked[0]:
            return None
        row = await (await conn.execute(sql("prune"), {"seconds": older_than_seconds})).fetchone()
    assert row is not None
    return int(row[0] or 0), (str(row[1]) if row[1] is not None else None)


def wake_mode(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(sql("wake_mode")).fetchone()
    assert row is not None
    return str(row[0])


def set_wake_mode(conn: psycopg.Connection[Any], mode: str) -> str:
    """Set the database's wake-up mode (the table's owner only); returns the mode in force."""
    row = conn.execute(sql("set_wake_mode"), {"mode": mode}).fetchone()
    assert row is not None
    return str(row[0])
