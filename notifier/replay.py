"""Reading the change log for clients: the replay behind every resume, and long-poll pages.

Both read in pages, and each page is ONE statement on a pooled connection that goes back to the
pool right after it: no connection is ever held while a client is waited for (a replay waits for
room in its client's queue between pages). The first statement takes the snapshot `now` together
with its rows: in a READ COMMITTED statement `pg_current_snapshot()` is the snapshot the statement
reads with (as the listener's window read, notifier/source.py). Later statements read with `now`
fixed by explicit predicates instead, `pg_visible_in_snapshot(xid, now)`, after the last key read.
Every statement re-reads the prune state: a prune between two pages may have removed rows the
cursor had not seen, and the client is then told to resync (CursorExpired), as on the first page.

Each statement runs under a `statement_timeout` (ROWCAST_READ_TIMEOUT), and at most
ROWCAST_MAX_READS_PER_SUBJECT of them per token subject at once (ReadGate): more wait their turn,
so one subject's resumes cannot take the whole pool from everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from rowcast.db import queries
from rowcast.notifier.events import Event
from rowcast.notifier.snapshot import BadCursor, Snapshot, pruned_past
from rowcast.notifier.standby import Standby, primary_snapshot

Pool = AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]]
PAGE = 2000  # log rows per page statement
Row = tuple[Any, ...]

# The page statements are in db/sql/queries.sql (replay_*, scan_*). How they read: a first page
# bounds the scan with xid >= xmin(since) so the xid index bounds it; a later page fixes `now`
# explicitly and goes on after the last key read, without the xmin bound, so the planner walks the
# key's index from there (linear over the whole replay) instead of re-reading every unseen row
# through the xid index on every page; long-poll pages go by a (xid, id) row comparison so the
# (xid, id) index starts exactly at the key, ordered by the column (never by `xid::text`, whose
# text order skips xids across 10^n). Each page chooses its ids first and builds only their rows
# as JSON: selecting the columns directly had Postgres build the JSON of every candidate row
# before sorting (1 s and a 110 MB external sort per 2,000-row page of a 200,000-change replay).
# The LEFT JOIN yields the snapshot and prune state even when no row matches.
_REPLAY_FIRST = queries.sql("replay_first")
_REPLAY_NEXT = queries.sql("replay_next")
_SCAN_FIRST = queries.sql("scan_first")
_SCAN_NEXT = queries.sql("scan_next")
# First pages on a standby (ROWCAST_READ_URL): `now` comes from the primary, fixed explicitly.
_ON_STANDBY = {
    _REPLAY_FIRST: queries.sql("replay_first_on_standby"),
    _SCAN_FIRST: queries.sql("scan_first_on_standby"),
}


class CursorExpired(Exception):
    """The log no longer holds every change this cursor has not seen (retention pruned them)."""


async def current_snapshot(pool: Pool) -> Snapshot:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT pg_current_snapshot()::text")).fetchone()
    assert row is not None
    return Snapshot.parse(row[0])


class ReadGate:
    """At most `limit` page reads at once per token subject; more wait their turn, never refused.

    A semaphore per subject, dropped when nobody holds or waits for it (subjects come and go).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._gates: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @property
    def subjects(self) -> int:
        """Subjects with a read running or queued (0 once every client has left)."""
        return len(self._gates)

    @asynccontextmanager
    async def hold(self, subject: str) -> AsyncIterator[None]:
        gate = self._gates.setdefault(subject, (asyncio.Semaphore(self.limit), [0]))
        semaphore, users = gate
        users[0] += 1
        try:
            async with semaphore:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._gates[subject]


@dataclass
class Scan:
    """One long-poll answer: the chosen views in id order, the next cursor, and whether to ask again."""

    bodies: list[str]
    cursor: Snapshot
    more: bool


class LogReader:
    """Page reads of the change log for clients, bounded in time and per subject."""

    def __init__(self, pool: Pool, gate: ReadGate, timeout: float, standby: Standby | None = None) -> None:
        self.pool = pool  # the primary: with a standby, only each read's snapshot comes from here
        self.standby = standby
        self.gate = gate
        self.timeout_ms = max(1, round(timeout * 1000))

    async def fetch(
        self, subject: str, query: str, params: dict[str, Any], since: Snapshot, *, walk: bool = False
    ) -> tuple[str | None, list[Row]]:
        """One page statement: (snapshot of a first page, log rows), after the prune check.

        The transaction exists only to scope its settings to this statement; it holds no snapshot
        between statements (READ COMMITTED) and ends before the connection goes back.

        `walk` turns sorting off for the statement, so that its id subquery walks an index in the
        page's order and stops at the page's end. Allowed to sort, the planner takes the
        visibility filters for selective, reads every remaining row and sorts them: each page as
        slow as the whole rest of the replay or backlog. Not for a replay's first page: without
        an xid bound to start from in id order, it would walk the key from the log's beginning.
        """
        config = (f"{self.timeout_ms}ms", "off" if walk else "on")
        async with self.gate.hold(subject), self._connection(params) as conn, conn.transaction():
            await conn.execute(
                "SELECT set_config('statement_timeout', %s, true), set_config('enable_sort', %s, true)",
                config,
            )
            rows = await (await conn.execute(query, params)).fetchall()
        pruned = int(rows[0][1]) if rows[0][1] is not None else None
        if pruned_past(since, pruned):
            raise CursorExpired(f"changes after this cursor were pruned (up to xid {pruned})")
        return rows[0][0], [r[2:] for r in rows if r[2] is not None]

    def _connection(
        self, params: dict[str, Any]
    ) -> contextlib.AbstractAsyncContextManager[AsyncConnection[Row]]:
        if self.standby is not None and "lsn" in params:
            return self.standby.connection(params["lsn"])
        return self.pool.connection()

    async def _first(
        self, subject: str, query: str, params: dict[str, Any], since: Snapshot, *, walk: bool = False
    ) -> tuple[Snapshot, list[Row]]:
        snap: str | None
        if self.standby is not None:
            # `now` from the primary (a standby's own snapshot hides what is running on the
            # primary, notifier/standby.py), the rows from the standby once it has replayed it.
            primary = await primary_snapshot(self.pool)
            if pruned_past(since, primary.pruned):
                raise CursorExpired(f"changes after this cursor were pruned (up to xid {primary.pruned})")
            params.update(now=primary.snapshot, lsn=primary.lsn)
            _, rows = await self.fetch(subject, _ON_STANDBY[query], params, since, walk=walk)
            snap = primary.snapshot
        else:
            snap, rows = await self.fetch(subject, query, params, since, walk=walk)
        assert snap is not None
        now = Snapshot.parse(snap)
        if since.xmax > now.xmax:
            raise BadCursor("cursor is from the future: not issued by this database")
        params["now"] = snap
        return now, rows

    async def replay(
        self, subject: str, since: Snapshot, table: tuple[str, str], batch: int = PAGE
    ) -> Replay:
        """Start a replay: the cursor is checked and the first page read (CursorExpired, BadCursor)."""
        params = _params(since, table, batch)
        now, rows = await self._first(subject, _REPLAY_FIRST, params, since)
        return Replay(self, subject, since, params, now, rows)

    async def scan(
        self,
        subject: str,
        since: Snapshot,
        table: tuple[str, str],
        view: Callable[[Event], str | None],
        limit: int,
        budget: int,
    ) -> Scan:
        """A long-poll page: whole transactions in xid order, up to `limit` changes this client sees.

        `view` gives the client's body for a change, or None when its scope or filter hides it:
        applied before counting, so hidden transactions never cut a page and an empty page says
        `more` only when `budget` (log rows read) ran out first. A transaction is never split,
        however large. Paging goes by xid so the next cursor says exactly which transactions were
        delivered.
        """
        params = _params(since, table, min(PAGE, budget))
        now, rows = await self._first(subject, _SCAN_FIRST, params, since, walk=True)
        picked: list[tuple[int, str]] = []
        scanned, upto = 0, None
        async with contextlib.aclosing(self._transactions(subject, since, params, rows)) as transactions:
            async for txn in transactions:
                views = [(e.id, body) for e in txn if (body := view(e)) is not None]
                if picked and len(picked) + len(views) > limit:
                    break
                picked += views
                scanned += len(txn)
                upto = txn[0].xid
                if scanned >= budget:
                    break
            else:
                return Scan([b for _, b in sorted(picked)], since.advanced(now), False)
        cursor = since if upto is None else since.advanced(now, upto)
        return Scan([b for _, b in sorted(picked)], cursor, True)

    async def _transactions(
        self, subject: str, since: Snapshot, params: dict[str, Any], rows: list[Row]
    ) -> AsyncGenerator[list[Event], None]:
        """Whole transactions in xid order, read in pages keyed on (xid, id).

        A page's rows come in no particular order (sorting them in the statement would make the
        planner sort every remaining row, see `fetch`): sorted here, 2,000 at most.
        """
        txn: list[Event] = []
        while True:
            rows.sort(key=_by_xid_id)
            for row in rows:
                event = Event.from_log_row(row)
                if txn and event.xid != txn[0].xid:
                    yield txn
                    txn = []
                txn.append(event)
            if len(rows) < params["limit"]:
                break
            params.update(after_xid=str(txn[-1].xid), after=txn[-1].id)
            _, rows = await self.fetch(subject, _SCAN_NEXT, params, since, walk=True)
        if txn:
            yield txn


class Replay:
    """A replay under way: its snapshot `now` and the pages still to read.

    After every page has been consumed, every change of the table visible in `now` and not in
    `since` has been produced, in id order (per-row order rests on it, docs/DESIGN.md).
    """

    def __init__(
        self,
        reader: LogReader,
        subject: str,
        since: Snapshot,
        params: dict[str, Any],
        now: Snapshot,
        first: list[Row],
    ) -> None:
        self.reader = reader
        self.subject = subject
        self.since = since
        self.params = params
        self.now = now
        self._first = first

    async def pages(self) -> AsyncGenerator[list[Event], None]:
        """Pages of events; between two, nothing is held (stop iterating at any point)."""
        rows = self._first
        while True:
            yield [Event.from_log_row(r) for r in rows]
            if len(rows) < self.params["limit"]:
                return
            self.params["after"] = rows[-1][0]
            _, rows = await self.reader.fetch(self.subject, _REPLAY_NEXT, self.params, self.since, walk=True)


def _by_xid_id(row: Row) -> tuple[int, int]:
    return int(row[1]), int(row[0])  # LogRow: (id, xid::text, ...)


def _params(since: Snapshot, table: tuple[str, str], limit: int) -> dict[str, Any]:
    schema, name = table
    return {"xmin": str(since.xmin), "since": str(since), "schema": schema, "table": name, "limit": limit}
