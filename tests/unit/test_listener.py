"""The listener's ordering rules against the in-memory ChangeSource (fast; Postgres twins in
tests/integration/test_log_truth.py and test_resume.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from rowcast.notifier.events import Event
from rowcast.notifier.listener import Listener
from rowcast.notifier.snapshot import Snapshot
from rowcast.notifier.testing import InMemoryChangeSource, InMemoryDatabase


class Recorder:
    """Stands in for the hub: what the listener publishes, checkpoints and resyncs."""

    def __init__(self, explode_on: int | None = None, checkpoint_due: bool = True) -> None:
        self.events: list[Event] = []
        self.checkpoints: list[str] = []
        self.resyncs: list[str] = []
        self.explode_on = explode_on
        self.due = checkpoint_due
        self.through = False  # inside the listener's write_through() block
        self.written_through: list[int] = []

    @contextlib.contextmanager
    def write_through(self) -> Iterator[None]:
        self.through = True
        try:
            yield
        finally:
            self.through = False

    def publish(self, event: Event) -> None:
        if event.id == self.explode_on:
            raise RecursionError("a change fan-out cannot handle")
        self.events.append(event)
        if self.through:
            self.written_through.append(event.id)

    def checkpoint_due(self) -> bool:
        return self.due

    def checkpoint(self, cursor: str) -> None:
        self.checkpoints.append(cursor)

    def resync_all(self, reason: str, message: str) -> None:
        self.resyncs.append(reason)

    @property
    def ids(self) -> list[int]:
        return [e.id for e in self.events]


@pytest.fixture
def db() -> InMemoryDatabase:
    return InMemoryDatabase()


@pytest.fixture
def source(db: InMemoryDatabase) -> InMemoryChangeSource:
    return InMemoryChangeSource(db)


@contextlib.asynccontextmanager
async def running(listener: Listener) -> AsyncIterator[None]:
    """The listener's loops as a task, ready (LISTENing and positioned) inside the block."""
    task = asyncio.create_task(listener.run())
    try:
        await wait_for(lambda: listener.ready)
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def started(source: InMemoryChangeSource, hub: Recorder, **kwargs: Any) -> Listener:
    listener = Listener(source, hub, **kwargs)  # type: ignore[arg-type]
    listener.position, listener.mode = await source.start()
    return listener


async def test_transactions_committing_out_of_id_order_are_each_delivered_once(
    db: InMemoryDatabase, source: InMemoryChangeSource
) -> None:
    hub = Recorder()
    listener = await started(source, hub)
    slow, fast = db.begin(), db.begin()
    first = db.write(slow, "books", 1)
    second = db.write(fast, "books", 2)
    db.commit(fast)
    await listener.read_once()
    assert hub.ids == [second]
    db.commit(slow)  # committed later, with the smaller id: found through the snapshot's xip
    await listener.read_once()
    await listener.read_once()
    assert hub.ids == [second, first]


async def test_a_transaction_running_above_the_snapshots_xmax_is_not_missed(
    db: InMemoryDatabase, source: InMemoryChangeSource
) -> None:
    """Regression (found by test_resume): with `id > hwm OR xid = ANY(xip)` this change was lost.

    A snapshot's xmax is the latest completed xid + 1: `late` is already running above it, so it is
    in neither xip nor below xmax, and its change took an id between two of `early`'s.
    """
    hub = Recorder()
    listener = await started(source, hub)
    early, late = db.begin(), db.begin()
    first = db.write(early, "books", 1)
    lost_before = db.write(late, "books", 2)
    last = db.write(early, "books", 1)
    db.commit(early)
    await listener.read_once()  # sees early (ids first, last); late runs above this xmax
    assert hub.ids == [first, last]
    db.commit(late)
    await listener.read_once()
    assert hub.ids == [first, last, lost_before]


async def test_each_checkpoint_covers_exactly_what_was_published_before_it(
    db: InMemoryDatabase, source: InMemoryChangeSource
) -> None:
    hub = Recorder()
    listener = await started(source, hub)
    open_tx = db.begin()
    db.write(open_tx, "books", 1)
    done = db.begin()
    db.write(done, "books", 2)
    db.commit(done)
    await listener.read_once()
    cursor = Snapshot.parse(hub.checkpoints[-1])
    assert cursor.visible(done) and not cursor.visible(open_tx)
    assert all(cursor.visible(e.xid) for e in hub.events)


async def test_a_long_transaction_does_not_widen_steady_state_reads(
    db: InMemoryDatabase, source: InMemoryChangeSource
) -> None:
    hub = Recorder()
    listener = await started(source, hub)
    long_tx = db.begin()
    db.write(long_tx, "books", 0)
    examined = []
    for i in range(1, 200):
        tx = db.begin()
        db.write(tx, "books", i)
        db.commit(tx)
        before = source.examined
        await listener.read_once()
        examined.append(source.examined - before)
    # Each read looks at the new change and the long transaction's row: never the whole backlog.
    assert max(examined) <= 2
    assert len(hub.events) == 199
    db.commit(long_tx)
    await listener.read_once()
    assert hub.events[-1].xid == long_tx


async def test_large_windows_are_read_in_pages_in_id_order(
    db: InMemoryDatabase, source: InMemoryChangeSource
) -> None:
    hub = Recorder()
    listener = await started(source, hub, page_size=7)
    tx = db.begin()
    ids = [db.write(tx, "books", i) for i in range(50)]
    db.commit(tx)
    await listener.read_once()
    assert hub.ids == ids
    assert source.reads == 8  # ceil(50 / 7) pages of one window
    assert len(hub.checkpoints) == 1  # one checkpoint, after the window's last page


async def test_only_the_last_change_of_a_window_is_written_through_and_not_before_a_checkpoint(
    db: InMemoryDatabase, source: InMemoryChangeSource
) -> None:
    """Each client's frames go out as the window's last change is queued (nothing more of the
    window is coming); earlier changes, and a last change a checkpoint follows at once, wait for
    the one flush after the fan-out, so a client still gets one write per window."""
    hub = Recorder(checkpoint_due=False)
    listener = await started(source, hub, page_size=7, write_through=hub.write_through)
    tx = db.begin()
    ids = [db.write(tx, "books", i) for i in range(10)]  # two pages
    db.commit(tx)
    await listener.read_once()
    assert hub.ids == ids and hub.written_through == [ids[-1]]
    hub.due = True
    tx = db.begin()
    more = [db.write(tx, "books", i) for i in range(3)]
    db.commit(tx)
    await listener.read_once()
    assert hub.ids == ids + more and hub.written_through == [ids[-1]]


async def test_a_change_whose_wake_up_never_came_arrives_by_the_timer(
    db: InMemoryDatabase, source: InMemoryChangeSource
) -> None:
    hub = Recorder()
    listener = Listener(source, hub, poll_interval=0.05)  # type: ignore[arg-type]
    async with running(listener):
        tx = db.begin()
        change = db.write(tx, "books", 1)
        db.commit(tx)  # and nobody rings
        await wait_for(lambda: hub.ids == [change], timeout=1.0)


async def test_forged_wake_ups_cost_rate_bounded_reads_and_add_nothing(
    db: InMemoryDatabase, source: InMemoryChangeSource
) -> None:
    hub = Recorder()
    listener = Listener(source, hub, poll_interval=10.0, min_gap=0.01)  # type: ignore[arg-type]
    async with running(listener):
        reads = source.reads
        for _ in range(5000):
            source.ring()
        await asyncio.sleep(0.2)
        assert source.reads - reads <= 25  # 0.2 s / 10 ms, plus slack: not one read per ring
        assert hub.events == []
        tx = db.begin()
        db.write(tx, "books", 1)
        db.commit(tx)
        source.ring()
        await wait_for(lambda: len(hub.events) == 1)


async def test_a_failing_read_is_reported_restarted_and_loses_nothing(
    db: InMemoryDatabase, source: InMemoryChangeSource
) -> None:
    hub = Recorder()
    failures: list[str] = []
    listener = Listener(source, hub, poll_interval=0.02, on_failure=failures.append)  # type: ignore[arg-type]
    async with running(listener):
        tx = db.begin()
        change = db.write(tx, "books", 1)
        db.commit(tx)
        source.fail_next_read = RuntimeError("a bug in the reader")
        await wait_for(lambda: failures == ["reader"])
        assert listener.status()["reading"] is False or hub.ids == [change]
        await wait_for(lambda: hub.ids == [change] and listener.ready)
        assert "reader" not in listener.status().get("problems", {})  # type: ignore[operator]


async def test_a_change_fan_out_cannot_handle_does_not_stop_the_stream(
    db: InMemoryDatabase, source: InMemoryChangeSource
) -> None:
    hub = Recorder(explode_on=db.next_id)  # the first change written below
    failures: list[str] = []
    listener = await started(source, hub, on_failure=failures.append)
    tx = db.begin()
    db.write(tx, "books", 1)
    good = db.write(tx, "books", 2)
    db.commit(tx)
    await listener.read_once()
    assert hub.ids == [good] and failures == ["fanout"]
    assert len(hub.checkpoints) == 1  # the window completed


async def test_a_gap_in_the_log_tells_every_subscriber_to_resync_and_reading_goes_on(
    db: InMemoryDatabase, source: InMemoryChangeSource
) -> None:
    hub = Recorder()
    listener = await started(source, hub)
    tx = db.begin()
    lost = db.write(tx, "books", 1)
    db.commit(tx)
    db.prune(lost)  # retention removed it before the listener read it
    await listener.read_once()
    assert hub.resyncs == ["cursor_expired"] and hub.events == []
    tx = db.begin()
    later = db.write(tx, "books", 2)
    db.commit(tx)
    await listener.read_once()
    assert hub.ids == [later] and hub.resyncs == ["cursor_expired"]


async def wait_for(predicate: Any, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


@pytest.fixture(autouse=True)
async def _no_leftover_tasks() -> AsyncIterator[None]:
    yield
    await asyncio.sleep(0)
