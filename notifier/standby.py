"""Reading the change log from a hot standby (ROWCAST_READ_URL) without trusting its snapshots.

A standby's own snapshot cannot be a cursor: during recovery Postgres keeps the transactions
running on the primary in the snapshot's *subxip* array, and `pg_current_snapshot()` copies only
`xip`, so on a standby it returns `xmin:xmax:` with an empty in-progress list even while a
transaction between xmin and xmax is still running on the primary (checked on 15 and 18,
tests/integration/test_standby.py). A window read with that S would skip the running
transaction's changes for good: S claims to have seen it.

So the snapshot always comes from the primary, in one statement that reads no log row:
`pg_current_snapshot()` with `pg_current_wal_insert_lsn()` evaluated after it. Every transaction
S sees had inserted its commit record before that LSN, so once the standby has replayed up to it,
the standby's own MVCC view holds every change S sees (and maybe later ones); the rows are read
there with S fixed by explicit predicates (`pg_visible_in_snapshot(xid, S)`), as the later pages
of every read already are. The result is exactly what the same read returns on the primary.

The standby is asked for its replay position before every statement (a multi-host URL may land
on another standby). WAL the primary has inserted but not flushed never reaches a standby: when
the standby has not caught up after NUDGE_AFTER and the primary's flush position is below the
LSN, one empty transaction on the primary (an xid, a synchronous commit) flushes it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from rowcast.db import queries

Pool = AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]]

NUDGE_AFTER = 0.05  # seconds behind before the primary is asked to flush its WAL
POLL_MIN, POLL_MAX = 0.0005, 0.02  # replay position polls: from 0.5 ms, doubling to 20 ms

# On the primary: S, the LSN every transaction S sees committed before, the prune state, the
# wake mode. In one READ COMMITTED statement the snapshot is taken before the target list runs.
PRIMARY_SNAPSHOT = queries.sql("standby_primary_snapshot")
_REPLAYED = queries.sql("standby_replayed")
_FLUSHED = queries.sql("standby_flushed")
# An xid and a synchronous local commit: the commit flushes every WAL record inserted before it.
_NUDGE = queries.sql("standby_nudge")


class StandbyBehind(psycopg.OperationalError):
    """The standby has not replayed up to the primary's snapshot in time (it lags or is paused).

    A psycopg.OperationalError, so every reader treats it as the database being unavailable: the
    log reader retries from the same position, a subscribe gets `unavailable`, a long-poll 503.
    """


@dataclass(frozen=True)
class PrimarySnapshot:
    snapshot: str  # S as text
    lsn: str  # pg_current_wal_insert_lsn() after S
    pruned: int | None
    mode: str


async def primary_snapshot(primary: Pool) -> PrimarySnapshot:
    async with primary.connection() as conn:
        row = await (await conn.execute(PRIMARY_SNAPSHOT)).fetchone()
    assert row is not None
    return PrimarySnapshot(
        str(row[0]), str(row[1]), int(row[2]) if row[2] is not None else None, str(row[3] or "notify")
    )


class Standby:
    """The standby's pool, and the primary's for the nudge."""

    def __init__(self, pool: Pool, primary: Pool, wait: float) -> None:
        self.pool = pool
        self.primary = primary
        self.wait = wait  # how long a read waits for the standby before StandbyBehind
        self.nudges = 0
        self.waits = 0

    @asynccontextmanager
    async def connection(self, lsn: str) -> AsyncIterator[AsyncConnection[tuple[Any, ...]]]:
        """A standby connection that has replayed the primary's WAL up to `lsn`.

        A connection is held only while asking; between polls it goes back to the pool.
        """
        started = time.monotonic()
        pause = POLL_MIN
        nudged = False
        while True:
            async with self.pool.connection() as conn:
                row = await (await conn.execute(_REPLAYED, (lsn,))).fetchone()
                assert row is not None
                if row[0] is None or row[0]:  # NULL: not in recovery (a primary has everything)
                    yield conn
                    return
                replayed = row[1]
            waited = time.monotonic() - started
            if waited >= self.wait:
                raise StandbyBehind(
                    f"the standby (ROWCAST_READ_URL) has not replayed the primary's WAL up to {lsn} "
                    f"within {self.wait:g}s (it is at {replayed}): is replay lagging or paused?"
                )
            if not nudged and waited >= NUDGE_AFTER:
                nudged = True
                await self._nudge(lsn)
            if pause == POLL_MIN:
                self.waits += 1
            await asyncio.sleep(pause)
            pause = min(pause * 2, POLL_MAX)

    async def _nudge(self, lsn: str) -> None:
        async with self.primary.connection() as conn:
            row = await (await conn.execute(_FLUSHED, (lsn,))).fetchone()
            if row is not None and not row[0]:
                async with conn.transaction():
                    await conn.execute(_NUDGE)
                self.nudges += 1
