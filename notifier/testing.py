"""An in-memory ChangeSource: transactions, snapshots and the change log, without Postgres.

It follows the rules the window reads rely on (ids handed out at write time from one counter,
xids at a transaction's first write, visibility by snapshot), so the listener's ordering rules
get fast unit tests; the same rules are tested against Postgres in tests/integration.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from rowcast.notifier.events import Event
from rowcast.notifier.snapshot import Snapshot, pruned_past
from rowcast.notifier.source import Page, Position


@dataclass
class LogRow:
    id: int
    xid: int
    table: str
    op: str
    pk: dict[str, Any]
    row: dict[str, Any] | None

    def event(self) -> Event:
        raw = json.dumps(
            {
                "id": self.id, "xid": str(self.xid), "at": "2026-01-01T00:00:00+00:00",
                "schema": "public", "table": self.table, "op": self.op, "pk": self.pk,
                "row": self.row, "old": None, "actor": {},
            }
        )  # fmt: skip
        return Event(self.id, self.xid, "2026-01-01T00:00:00+00:00", "public", self.table, self.op,
                     self.pk, self.row, None, {}, raw)  # fmt: skip


class InMemoryDatabase:
    """Transactions writing to a change log; snapshots as Postgres takes them."""

    def __init__(self) -> None:
        self.next_xid = 100
        self.next_id = 1
        self.running: set[int] = set()
        self.committed: set[int] = set()
        self.latest_completed = 99
        self.rows: list[LogRow] = []
        self.pruned_xid: int | None = None
        self.mode = "notify"

    def begin(self) -> int:
        xid = self.next_xid
        self.next_xid += 1
        self.running.add(xid)
        return xid

    def write(self, xid: int, table: str, key: int, **row: Any) -> int:
        assert xid in self.running
        change = LogRow(self.next_id, xid, table, "insert", {"id": key}, {"id": key, **row})
        self.next_id += 1
        self.rows.append(change)
        return change.id

    def commit(self, xid: int) -> None:
        self.running.remove(xid)
        self.committed.add(xid)
        self.latest_completed = max(self.latest_completed, xid)

    def abort(self, xid: int) -> None:
        self.running.remove(xid)
        self.rows = [r for r in self.rows if r.xid != xid]
        self.latest_completed = max(self.latest_completed, xid)

    def snapshot(self) -> Snapshot:
        """As Postgres takes it: xmax is the latest completed xid + 1, not the next xid, so a
        transaction running with a higher xid is neither in xip nor below xmax."""
        xmax = self.latest_completed + 1
        xip = frozenset(x for x in self.running if x < xmax)
        return Snapshot(min(xip, default=xmax), xmax, xip)

    def prune(self, upto_id: int) -> None:
        """Remove rows up to an id (of finished transactions), as retention does."""
        gone = [r for r in self.rows if r.id <= upto_id and r.xid in self.committed]
        self.rows = [r for r in self.rows if r not in gone]
        if gone:
            self.pruned_xid = max([self.pruned_xid or 0, *(r.xid for r in gone)])

    def visible(self, row: LogRow, snap: Snapshot) -> bool:
        return row.xid in self.committed and snap.visible(row.xid)


class InMemoryChangeSource:
    """ChangeSource over an InMemoryDatabase; `ring()` is a notification (real or forged)."""

    def __init__(self, db: InMemoryDatabase) -> None:
        self.db = db
        self.reads = 0
        self.examined = 0  # rows the window predicate looked at (what an index scan would visit)
        self.fail_next_read: Exception | None = None
        self._wakes: asyncio.Queue[None] = asyncio.Queue()

    def ring(self) -> None:
        self._wakes.put_nowait(None)

    async def start(self) -> tuple[Position, str]:
        return Position(self.db.snapshot()), self.db.mode

    async def read(self, since: Position, snapshot: Snapshot | None, after: int, limit: int) -> Page:
        if self.fail_next_read is not None:
            exc, self.fail_next_read = self.fail_next_read, None
            raise exc
        self.reads += 1
        snap = snapshot or self.db.snapshot()
        if snapshot is None and pruned_past(since.snapshot, self.db.pruned_xid):
            return Page([], snap, False, self.db.mode, gap="pruned")
        p = since.snapshot
        window = [r for r in self.db.rows if (r.xid in p.xip or r.xid >= p.xmax) and r.id > after]
        self.examined += len(window)
        rows = sorted((r for r in window if self.db.visible(r, snap)), key=lambda r: r.id)
        return Page([r.event() for r in rows[:limit]], snap, len(rows) > limit, self.db.mode)

    async def rearm(self) -> None:
        return None

    async def wakeups(self, ready: asyncio.Event) -> AsyncIterator[None]:
        ready.set()
        try:
            yield
            while True:
                await self._wakes.get()
                yield
        finally:
            ready.clear()
