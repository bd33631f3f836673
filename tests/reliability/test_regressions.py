"""Regression tests, one per failure the randomized scenarios found (named after what broke)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from rowcast.notifier.app import create_app
from rowcast.notifier.events import Event
from rowcast.notifier.filters import Filter
from rowcast.notifier.hub import LIVE, Session, Subscription
from rowcast.notifier.outbox import Outbox
from rowcast.notifier.replay import LogReader, ReadGate
from rowcast.notifier.snapshot import Snapshot
from rowcast.notifier.state import LISTENER, NOTIFIER

from rowcast.auth import OPEN
from tests.reliability.clients import Feed
from tests.reliability.model import T_DDL, View, digest, key_of
from tests.servers import serve, settings_for, wait_healthy, wait_until, ws_connect

AConn = psycopg.AsyncConnection[tuple[Any, ...]]


@pytest.fixture
async def t_table(aconn: AConn) -> AConn:
    for statement in T_DDL:
        await aconn.execute(statement)  # type: ignore[arg-type]
    return aconn


@pytest.fixture
async def notifier(db_url: str, t_table: AConn) -> AsyncIterator[str]:
    async with serve(create_app(settings_for(db_url))) as base:
        await wait_healthy(base)
        yield base


async def test_key_change_that_moves_a_row_out_of_view_removes_the_key_the_subscriber_has(
    notifier: str, t_table: AConn
) -> None:
    """Found by seed 1107684666: the `moved: out` delete named the row's new key, so the
    subscriber deleted a key it never had and kept the old row forever."""
    await t_table.execute("INSERT INTO t (id, n) VALUES (1, 10)")
    async with ws_connect(notifier) as client:
        await client.subscribe(table="t", where={"n": {"lt": 50}})
        await t_table.execute("UPDATE t SET id = 2, n = 90 WHERE id = 1")
        out = await client.until(lambda f: f["type"] == "change")
    assert (out["op"], out["moved"], out["row"]) == ("delete", "out", None)
    assert out["pk"] == {"id": 1} and out["old"] == {"id": 1}


# -- mode "latest": coalescing must never move a frame across a key change or a truncate ---------


def _event(
    change_id: int, op: str, pk: dict[str, Any] | None, row: dict[str, Any] | None, old: dict[str, Any] | None
) -> Event:
    return Event(
        change_id, 1000 + change_id, "2026-01-01T00:00:00+00:00", "public", "t", op, pk, row, old, {}
    )


def _latest_feed_after(events: list[Event]) -> Feed:
    """Queue `events` for a mode-latest subscriber that is not reading, then let it read them all."""
    session = Session(OPEN, Outbox(1000, 1 << 20), lambda code, reason: None)
    sub = Subscription("s", session, "public.t", ("id",), Filter(), None, "latest")
    sub.state = LIVE
    for event in events:
        session.deliver(sub, event)
    feed = Feed("latest", View("t", mode="latest"))
    for frame in session.outbox.frames:
        if frame.data is not None:
            feed.take_raw(json.loads(frame.data), 1)
    return feed


async def test_latest_mode_does_not_coalesce_a_later_change_over_a_key_change() -> None:
    feed = _latest_feed_after(
        [
            _event(1, "insert", {"id": 1}, {"id": 1, "n": 1}, None),
            _event(2, "update", {"id": 2}, {"id": 2, "n": 1}, {"id": 1}),  # key 1 -> 2
            _event(3, "update", {"id": 2}, {"id": 2, "n": 3}, {"n": 1}),
        ]
    )
    assert feed.rows == {key_of("t", {"id": 2}): digest({"id": 2, "n": 3})}


async def test_latest_mode_does_not_coalesce_a_change_of_the_old_key_ahead_of_the_key_change() -> None:
    feed = _latest_feed_after(
        [
            _event(1, "insert", {"id": 1}, {"id": 1, "n": 1}, None),
            _event(2, "update", {"id": 2}, {"id": 2, "n": 1}, {"id": 1}),  # key 1 -> 2
            _event(3, "insert", {"id": 1}, {"id": 1, "n": 9}, None),  # a new row takes key 1
        ]
    )
    # Key 1's new row must come after the change that moved the old row away from key 1.
    assert feed.admitted == [1, 2, 3]
    assert feed.rows == {
        key_of("t", {"id": 2}): digest({"id": 2, "n": 1}),
        key_of("t", {"id": 1}): digest({"id": 1, "n": 9}),
    }


async def test_latest_mode_does_not_coalesce_a_change_ahead_of_a_truncate() -> None:
    feed = _latest_feed_after(
        [
            _event(1, "insert", {"id": 1}, {"id": 1, "n": 1}, None),
            _event(2, "truncate", None, None, None),
            _event(3, "insert", {"id": 1}, {"id": 1, "n": 2}, None),
        ]
    )
    assert feed.rows == {key_of("t", {"id": 1}): digest({"id": 1, "n": 2})}


async def test_listener_catch_up_sends_a_subscriber_nothing_its_cursor_already_saw(
    db_url: str, aconn: AConn
) -> None:
    """Found by seed 2042309785: after a LISTEN reconnect (or a coalesced log read) the listener
    republishes everything since *its* last checkpoint, and a subscription that started from a
    newer cursor got those changes again. For a client that loaded a snapshot at that cursor
    (rows count as id 0), an older version of a row was applied over the snapshot's."""
    app = create_app(settings_for(db_url, poll_interval=60))  # reads on wake-ups only
    async with serve(app) as base:
        await wait_healthy(base)
        row = await (await aconn.execute("INSERT INTO books (title) VALUES ('v1') RETURNING id")).fetchone()
        assert row is not None
        await aconn.execute("UPDATE books SET title = 'v2' WHERE id = %s", (row[0],))
        snapshot = await (await aconn.execute("SELECT pg_current_snapshot()::text")).fetchone()
        assert snapshot is not None  # a page loaded here would show 'v2'
        async with ws_connect(base) as client:
            assert (await client.subscribe(cursor=snapshot[0]))["type"] == "subscribed"
            listener = app[LISTENER]
            await aconn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'rowcast-listener' AND datname = current_database()"
            )
            await wait_until(lambda: listener.reconnects > 0 and listener.ready)
            await aconn.execute("INSERT INTO books (title) VALUES ('after')")
            await client.until(lambda f: f["type"] == "change" and f["row"]["title"] == "after")
        titles = [f["row"]["title"] for f in client.frames if f["type"] == "change"]
    assert titles == ["after"]


async def test_a_checkpoint_older_than_a_subscriptions_cursor_is_not_sent_to_it(
    db_url: str, aconn: AConn
) -> None:
    """A window read that began before a subscription's replay checkpoints a snapshot older than
    the replay's. Sent, it moved the client's resume point back: the next resume replayed changes
    its snapshot already had, applied over the snapshot's rows (id 0) as if they were newer."""
    # Only the checkpoints we hand the hub, each forwarded at once (no per-client throttle).
    app = create_app(settings_for(db_url, poll_interval=60, client_checkpoint_interval=0))
    async with serve(app) as base:
        await wait_healthy(base)
        old = await (await aconn.execute("SELECT pg_current_snapshot()::text")).fetchone()
        await aconn.execute("INSERT INTO books (title) VALUES ('in the snapshot')")
        snapshot = await (await aconn.execute("SELECT pg_current_snapshot()::text")).fetchone()
        assert old is not None and snapshot is not None
        async with ws_connect(base) as client:
            await client.subscribe(cursor=snapshot[0])
            hub = app[NOTIFIER].hub  # its replay is over: checkpoints are no longer held back
            await wait_until(lambda: hub.sessions and not any(s.replaying for s in hub.sessions))
            for cursor in (old[0], snapshot[0]):  # a late window's checkpoint, then a current one
                hub.checkpoint(cursor)
            checkpoint = await client.until(lambda f: f["type"] == "checkpoint")
    assert checkpoint["cursor"] == snapshot[0]


# -- large rows: the queue's byte bound and the replay's backpressure must agree ----------------


async def test_resume_past_rows_larger_than_half_the_queue_bytes_completes_without_4008(
    db_url: str, t_table: AConn
) -> None:
    """Found by seeds 476397044 and 317613689: a replay waited for room only by message count, so a
    burst of 100 KB rows overflowed the byte bound; the client got 4008, resumed from the same
    cursor, overflowed at the same place, and never got past the burst (a livelock: a gap)."""
    async with serve(create_app(settings_for(db_url, queue_bytes=256 * 1024))) as base:
        await wait_healthy(base)
        cursor = await (await t_table.execute("SELECT pg_current_snapshot()::text")).fetchone()
        assert cursor is not None
        await t_table.execute(
            "INSERT INTO t (id, payload) SELECT g, repeat('x', 100000) FROM generate_series(1, 20) g"
        )
        async with ws_connect(base) as client:
            await client.subscribe(table="t", cursor=cursor[0])
            await client.until(lambda f: f["type"] == "change" and f["pk"] == {"id": 20}, timeout=20)
        assert [f["pk"]["id"] for f in client.frames if f["type"] == "change"] == list(range(1, 21))


async def test_a_change_larger_than_the_queue_byte_bound_is_still_delivered(
    db_url: str, t_table: AConn
) -> None:
    """A frame bigger than the whole byte bound never fit, even into an empty queue: every
    subscriber of the table was closed with 4008 on each attempt, forever."""
    async with serve(create_app(settings_for(db_url, queue_bytes=64 * 1024))) as base:
        await wait_healthy(base)
        async with ws_connect(base) as client:
            await client.subscribe(table="t")
            await t_table.execute("INSERT INTO t (id, payload) VALUES (1, repeat('x', 100000))")
            change = await client.until(lambda f: f["type"] == "change", timeout=10)
    assert len(change["row"]["payload"]) == 100_000


async def test_leaving_a_replay_early_leaves_nothing_on_the_connection(db_url: str, t_table: AConn) -> None:
    """Found by the soak: a replay abandoned mid-way (client gone, session closed) left its
    server-side cursor to the event loop's async-generator finalizer, which ran CLOSE later on the
    pooled connection, by then inside someone else's transaction, and aborted it. Replays now read
    in page statements and give the connection back after each; this keeps that true."""
    await t_table.execute("INSERT INTO t (id) SELECT g FROM generate_series(1, 10) g")

    async def read_one(pool: AsyncConnectionPool[Any]) -> None:
        replay = await LogReader(pool, ReadGate(1), 5.0).replay("u", Snapshot(1, 1), ("public", "t"), batch=2)
        async for _page in replay.pages():
            break  # as Notifier._replay does when its session closes

    async with AsyncConnectionPool(
        db_url, min_size=1, max_size=1, open=False, kwargs={"autocommit": True}
    ) as pool:
        await read_one(pool)  # returns: its generator is garbage now, finalized by the loop
        async with pool.connection() as conn, conn.transaction():
            for _ in range(5):
                await conn.execute("SELECT 1")  # the next user of the connection, unharmed
                await asyncio.sleep(0)
