"""Where changes come from: wake-ups (NOTIFY, a data-free doorbell) and window reads of the log.

The listener sees the database only through `ChangeSource`, so its ordering rules are tested
against an in-memory fake (notifier/testing.py) as well as against Postgres.

A window read takes a snapshot S and returns the changes visible in S and not in the previous
read's snapshot P, in id order. What P did not see is exactly the transactions in xip(P) and those
with an xid at or above xmax(P), so the read is `xid = ANY(xip(P)) OR xid >= xmax(P)`: two index
lookups on the xid index. A transaction open for an hour only adds its own xid to the list; it
never widens the scan (as `xid >= xmin(P)` would).

Not `id > hwm OR xid = ANY(xip(P))`, though ids are handed out in time order: a snapshot's xmax is
the latest *completed* xid plus one, so a transaction already running with a higher xid is in
neither xip nor below xmax, and its change can carry an id below hwm (it wrote between two writes
of a transaction that then committed). tests/unit/test_listener.py replays that interleaving.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from psycopg import AsyncConnection
from rowcast.db import queries
from rowcast.notifier.events import Event
from rowcast.notifier.replay import Pool
from rowcast.notifier.snapshot import Snapshot, pruned_past
from rowcast.notifier.standby import Standby, primary_snapshot

from rowcast.errors import PoolerDetected

CHANNEL = "rowcast"
PAGE = 2000  # changes per window page; a 100,000-row statement is read in pages

# Transactions at or after P's xmax are read as a bounded range (queries.sql, window_*): without statistics on the log (before
# its first ANALYZE) Postgres guesses that an open-ended `xid >= $1` matches a third of the log
# and reads the whole log on every read; a range it guesses at 0.5% and takes the
# xid index (tests/integration/test_read_cost.py). The upper bound is never reached: xids do not
# advance by 2^48 between two reads.
XMAX_SPAN = 1 << 48

# The window's rows: of a transaction P did not see (in progress at P, or at/after its xmax),
# visible in S, after the page's last id. Explicit visibility against S lets every page after the
# first run outside the snapshot's transaction.
_WINDOW = queries.sql("window_page")
# The first page in ONE statement (one round trip): in an autocommit statement the snapshot
# pg_current_snapshot() returns is the one the statement reads with, so S and the rows visible in
# it come together; the LEFT JOIN yields S even when the window is empty.
_FIRST = queries.sql("window_first")
# The first page on a standby (ROWCAST_READ_URL, notifier/standby.py): S comes from the primary and
# is fixed explicitly; the standby's own prune state is re-read with the rows.
_STANDBY_FIRST = queries.sql("window_first_on_standby")
_START = queries.sql("reader_start")
_REARM = queries.sql("doorbell_rearm")
# The doorbell row is gone after a crash (unlogged). Insert it only when missing: a plain ON CONFLICT
# would wait for a writer (a long transaction, say) that holds the row claimed.
_DOORBELL = queries.sql("doorbell_restore")


@dataclass(frozen=True)
class Position:
    """Where the reader stands: every change this snapshot sees has been read."""

    snapshot: Snapshot


@dataclass
class Page:
    """One page of a window read."""

    events: list[Event]
    snapshot: Snapshot  # S, the window's snapshot
    more: bool  # another page of the same window follows
    mode: str = "notify"  # the database's wake-up mode, as of the first page
    gap: str | None = None  # the log lost changes P had not seen (retention): resync


class ChangeSource(Protocol):
    async def start(self) -> tuple[Position, str]:
        """The current position (nothing before it is delivered) and the wake-up mode."""
        ...

    async def read(self, since: Position, snapshot: Snapshot | None, after: int, limit: int) -> Page:
        """A page of the window after `since`; `snapshot` None takes a new one (the first page)."""
        ...

    async def rearm(self) -> None:
        """Coalesced mode: arm the doorbell again before a read."""
        ...

    def wakeups(self, ready: asyncio.Event) -> AsyncIterator[None]:
        """Yield once per notification; set `ready` once notifications are known to arrive."""
        ...


class PgChangeSource:
    """The real thing: a LISTEN connection of its own, window reads from a small pool."""

    def __init__(
        self,
        url: str,
        pool: Pool,
        *,
        liveness_timeout: float = 5.0,
        probe_timeout: float = 5.0,
        standby: Standby | None = None,
    ):
        self.url = url
        self.pool = pool  # the primary: snapshots, wake mode, doorbell, the LISTEN probe
        self.standby = standby  # where the rows are read, when not from the primary
        self._lsn = ""  # the primary's WAL position behind the current window's snapshot
        self.liveness_timeout = liveness_timeout
        self.probe_timeout = probe_timeout

    async def start(self) -> tuple[Position, str]:
        async with self.pool.connection() as conn:
            await conn.execute(_DOORBELL)
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                row = await (await conn.execute(_START)).fetchone()
        assert row is not None
        return Position(Snapshot.parse(row[0])), str(row[2] or "notify")

    async def read(self, since: Position, snapshot: Snapshot | None, after: int, limit: int) -> Page:
        params: dict[str, Any] = {
            "xmax": str(since.snapshot.xmax),
            "xmax_hi": str(since.snapshot.xmax + XMAX_SPAN),
            "xip": [str(x) for x in sorted(since.snapshot.xip)],
            "after": after,
            "limit": limit + 1,
        }
        if self.standby is not None:
            return await self._read_standby(self.standby, since, snapshot, params, limit)
        async with self.pool.connection() as conn:
            if snapshot is not None:  # a later page: S is fixed, its rows are committed for good
                params["snap"] = str(snapshot)
                rows = await (await conn.execute(_WINDOW, params)).fetchall()
                return self._page(rows, snapshot, limit)
            rows = await (await conn.execute(_FIRST, params)).fetchall()
        snap = Snapshot.parse(rows[0][0])
        mode = str(rows[0][2] or "notify")
        pruned = int(rows[0][1]) if rows[0][1] is not None else None
        if pruned_past(since.snapshot, pruned):
            gap = f"changes up to xid {pruned} were pruned before this notifier read them"
            return Page([], snap, False, mode, gap=gap)
        page = self._page([r[3:] for r in rows if r[3] is not None], snap, limit)
        page.mode = mode
        return page

    async def _read_standby(
        self, standby: Standby, since: Position, snapshot: Snapshot | None, params: dict[str, Any], limit: int
    ) -> Page:
        """The same page, with S from the primary and the rows from the standby once it has
        replayed everything S sees (notifier/standby.py)."""
        if snapshot is not None:
            params["snap"] = str(snapshot)
            async with standby.connection(self._lsn) as conn:
                rows = await (await conn.execute(_WINDOW, params)).fetchall()
            return self._page(rows, snapshot, limit)
        primary = await primary_snapshot(self.pool)
        self._lsn = primary.lsn
        snap = Snapshot.parse(primary.snapshot)
        params.update(snap=primary.snapshot, after=0)
        async with standby.connection(primary.lsn) as conn:
            rows = await (await conn.execute(_STANDBY_FIRST, params)).fetchall()
        # The standby may have replayed a prune that came after S: its rows are gone there.
        here = int(rows[0][0]) if rows[0][0] is not None else None
        pruned = max((p for p in (primary.pruned, here) if p is not None), default=None)
        if pruned_past(since.snapshot, pruned):
            gap = f"changes up to xid {pruned} were pruned before this notifier read them"
            return Page([], snap, False, primary.mode, gap=gap)
        page = self._page([r[1:] for r in rows if r[1] is not None], snap, limit)
        page.mode = primary.mode
        return page

    @staticmethod
    def _page(rows: list[tuple[Any, ...]], snapshot: Snapshot, limit: int) -> Page:
        events = [Event.from_log_row(r) for r in rows[:limit]]
        return Page(events, snapshot, more=len(rows) > limit)

    async def rearm(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(_REARM)

    async def wakeups(self, ready: asyncio.Event) -> AsyncIterator[None]:
        conn = await AsyncConnection.connect(self.url, autocommit=True, application_name="rowcast-listener")
        try:
            await conn.execute(f"LISTEN {CHANNEL}")
            # Prove that notifications arrive (a transaction-pooling PgBouncer breaks LISTEN
            # silently) on a channel nobody else knows: the public one carries nothing to trust.
            probe = f"rowcast_probe_{secrets.token_hex(8)}"
            await conn.execute(f"LISTEN {probe}")
            async with self.pool.connection() as other:
                await other.execute("SELECT pg_notify(%s, '')", (probe,))
            try:
                async with asyncio.timeout(self.probe_timeout):
                    async for notify in conn.notifies():
                        if notify.channel == probe:
                            break
            except TimeoutError:
                raise PoolerDetected(
                    "LISTEN does not receive notifications on this connection (is it behind PgBouncer "
                    "in transaction mode?); point the notifier directly at Postgres with ROWCAST_LISTEN_URL "
                    "(DATABASE_URL may stay on the pooler for the API)"
                ) from None
            await conn.execute(f"UNLISTEN {probe}")
            ready.set()
            yield  # whatever happened while we were not listening: read now
            while True:
                got_any = False
                async for _ in conn.notifies(timeout=self.liveness_timeout):
                    got_any = True
                    yield
                if not got_any:  # quiet: prove the connection is alive
                    async with asyncio.timeout(self.liveness_timeout):
                        await conn.execute("SELECT 1")
        finally:
            ready.clear()
            await conn.close()
