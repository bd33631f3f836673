"""Reading the change log: the replay behind every resume, the listener's catch-up and long-poll."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from notifier.events import LOG_COLUMNS, Event
from notifier.snapshot import BadCursor, Snapshot, pruned_past

Pool = AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]]

_UNSEEN = (
    f"SELECT {LOG_COLUMNS} FROM rowcast.changes "
    "WHERE xid >= %(xmin)s::text::xid8 AND NOT pg_visible_in_snapshot(xid, %(cursor)s::pg_snapshot)"
)
_TABLE = " AND schema_name = %(schema)s AND table_name = %(table)s"


class CursorExpired(Exception):
    """The log no longer holds every change this cursor has not seen (retention pruned them)."""


async def current_snapshot(pool: Pool) -> Snapshot:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT pg_current_snapshot()::text")).fetchone()
    assert row is not None
    return Snapshot.parse(row[0])


def _params(since: Snapshot, table: tuple[str, str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {"xmin": str(since.xmin), "cursor": str(since)}
    if table is not None:
        params["schema"], params["table"] = table
    return params


@asynccontextmanager
async def _snapshot_tx(pool: Pool, since: Snapshot) -> AsyncIterator[tuple[AsyncConnection[Any], Snapshot]]:
    """A REPEATABLE READ transaction, its snapshot, and the check that `since` is replayable."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = await (
            await conn.execute(
                "SELECT pg_current_snapshot()::text, (SELECT pruned_xid::text FROM rowcast.prune_state)"
            )
        ).fetchone()
        assert row is not None
        now = Snapshot.parse(row[0])
        if since.xmax > now.xmax:
            raise BadCursor("cursor is from the future: not issued by this database")
        if pruned_past(since, int(row[1]) if row[1] is not None else None):
            raise CursorExpired(f"changes after this cursor were pruned (up to xid {row[1]})")
        yield conn, now


@asynccontextmanager
async def replay(
    pool: Pool, since: Snapshot, table: tuple[str, str] | None = None, batch: int = 2000
) -> AsyncIterator[tuple[Snapshot, AsyncIterator[Event]]]:
    """Every committed change `since` has not seen (of one table, or all), in id order.

    Yields (snapshot of the replay, events). After consuming the events, every change visible in
    that snapshot and not in `since` has been produced.
    """
    async with _snapshot_tx(pool, since) as (conn, now):

        async def events() -> AsyncGenerator[Event, None]:
            query = _UNSEEN + (_TABLE if table else "") + " ORDER BY id"
            async with conn.cursor(name="rowcast_replay") as cur:
                cur.itersize = batch
                await cur.execute(query, _params(since, table))
                async for row in cur:
                    yield Event.from_log_row(row)

        stream = events()
        try:
            yield now, stream
        finally:
            # A consumer that stops early (its client left) must close the server-side cursor
            # here, inside this transaction: left to the event loop's finalizer, the CLOSE runs
            # later on the pooled connection, inside whoever's transaction has it by then. (On a
            # broken connection the cursor is gone with the transaction: nothing to close.)
            with contextlib.suppress(psycopg.Error):
                await stream.aclose()


async def page(
    pool: Pool, since: Snapshot, table: tuple[str, str], limit: int
) -> tuple[list[Event], Snapshot, bool]:
    """Up to about `limit` unseen changes of one table, whole transactions at a time.

    Returns (events in id order, the next cursor, whether more are waiting). Paging goes by xid so
    the next cursor can say exactly which transactions were delivered.
    """
    async with _snapshot_tx(pool, since) as (conn, now):
        params = {**_params(since, table), "limit": limit + 1}
        rows = await (
            await conn.execute(_UNSEEN + _TABLE + " ORDER BY changes.xid, id LIMIT %(limit)s", params)
        ).fetchall()
        events = [Event.from_log_row(r) for r in rows]
        if len(events) <= limit:
            return events_by_id(events), since.advanced(now), False
        last_xid = events[limit - 1].xid
        cut = events[limit].xid == last_xid  # the last transaction continues past the page
        events = events[:limit]
        if cut and events[0].xid == last_xid:
            # One transaction larger than a page: deliver it whole.
            params["xid"] = str(last_xid)
            query = _UNSEEN + _TABLE + " AND xid = %(xid)s::text::xid8 ORDER BY id"
            events = [Event.from_log_row(r) for r in await (await conn.execute(query, params)).fetchall()]
        elif cut:
            events = [e for e in events if e.xid != last_xid]
        upto = max(e.xid for e in events)
        return events_by_id(events), since.advanced(now, upto), True


def events_by_id(events: list[Event]) -> list[Event]:
    return sorted(events, key=lambda e: e.id)
