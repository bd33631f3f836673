"""The log is the only truth: regression tests for the attacks and faults on the NOTIFY channel.

Each test replays one finding against a real Postgres and a real notifier: a login with no grants
listening in, forged notifications, hostile session settings, wake-mode switches under load,
two-phase commit, prunes across open transactions, and changes the notifier cannot read in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import psycopg
import pytest
from rowcast.notifier.app import create_app
from rowcast.notifier.hub import Hub
from rowcast.notifier.listener import Listener
from rowcast.notifier.replay import Pool
from rowcast.notifier.source import PgChangeSource

from tests.pg import ROLE_PASSWORD, as_role
from tests.servers import WsClient, await_prunable, serve, settings_for, ws_connect

AConn = psycopg.AsyncConnection[tuple[Any, ...]]

FORGED = json.dumps(
    {
        "id": 2**53 - 1, "xid": "1", "at": "2026-01-01T00:00:00+00:00", "schema": "public",
        "table": "books", "op": "insert", "pk": {"id": 1}, "row": {"id": 1, "title": "forged"},
        "old": None, "actor": {"user": "postgres"}, "type": "change", "checkpoint": "1:1:",
    }
)  # fmt: skip


@contextlib.asynccontextmanager
async def notifier(db_url: str, **settings: Any) -> AsyncIterator[str]:
    app = create_app(settings_for(db_url, **settings))
    async with serve(app) as base:
        yield base


async def changes_of(client: WsClient, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            frame = await client.recv(timeout)
            if frame["type"] == "change":
                got.append(frame)
    return got


async def titles_until(client: WsClient, wanted: set[str], timeout: float = 10.0) -> list[str]:
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        while not wanted <= set(seen):
            frame = await client.recv(timeout)
            if frame["type"] == "change" and frame["row"]:
                seen.append(frame["row"]["title"])
    return seen


async def metric(base: str, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


@contextlib.asynccontextmanager
async def login(aconn: AConn, db_url: str, role: str) -> AsyncIterator[AConn]:
    """A login role with no grants at all: what any database user can do."""
    await aconn.execute(f"DROP ROLE IF EXISTS {role}")
    await aconn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{ROLE_PASSWORD}'")
    try:
        async with await psycopg.AsyncConnection.connect(as_role(db_url, role), autocommit=True) as conn:
            yield conn
    finally:
        await aconn.execute(f"DROP OWNED BY {role}")
        await aconn.execute(f"DROP ROLE {role}")


async def test_a_login_without_grants_hears_no_row_data_on_the_channel(db_url: str, aconn: AConn) -> None:
    async with login(aconn, db_url, "rowcast_test_snoop") as snoop:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await snoop.execute("SELECT * FROM books")
        await snoop.execute("LISTEN rowcast")
        await aconn.execute("INSERT INTO books (title, owner) VALUES ('bob''s secret', 'bob')")
        await aconn.execute("UPDATE books SET title = 'still secret' WHERE owner = 'bob'")
        heard = [n async for n in snoop.notifies(timeout=1.0)]
    assert [n.payload for n in heard] == ["", ""]  # a doorbell: no row, id, table or actor


async def test_forged_notifications_inject_nothing_skip_nothing_and_cost_bounded_reads(
    db_url: str, aconn: AConn
) -> None:
    async with (
        login(aconn, db_url, "rowcast_test_forger") as forger,
        notifier(db_url, poll_interval=5.0) as base,
        ws_connect(base) as client,
    ):
        assert (await client.subscribe())["type"] == "subscribed"
        reads_before = await metric(base, "rowcast_log_reads_total")
        for _ in range(2000):  # a flood of forged events, checkpoints and plain wake-ups
            await forger.execute("SELECT pg_notify('rowcast', %s)", (FORGED,))
        await aconn.execute("INSERT INTO books (title) VALUES ('real')")
        (change,) = await changes_of(client, 1)
        assert change["row"]["title"] == "real" and change["id"] < 2**53 - 1
        with pytest.raises(TimeoutError):  # and nothing else: the forged change never arrives
            await client.until(lambda f: f["type"] == "change", timeout=0.5)
        await aconn.execute("INSERT INTO books (title) VALUES ('after the flood')")
        assert (await changes_of(client, 1))[0]["row"]["title"] == "after the flood"
        reads = await metric(base, "rowcast_log_reads_total") - reads_before
        wakeups = await metric(base, "rowcast_wakeups_total")
    assert wakeups >= 1000
    assert reads < wakeups / 2, (reads, wakeups)  # wake-ups are coalesced into far fewer reads


async def test_hostile_session_settings_delay_a_change_by_at_most_one_poll(db_url: str, aconn: AConn) -> None:
    """A writer that fakes the old coalesced-mode flags still gets its change delivered and replayed."""
    async with notifier(db_url, poll_interval=0.2) as base, ws_connect(base) as client:
        subscribed = await client.subscribe()
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as writer:
            await writer.execute("SET rowcast.wake_mode = 'coalesced'")
            await writer.execute("SET rowcast.rang = 'y'")  # "already rang": it never will
            await writer.execute("SET rowcast.wake = 'off'")
            await writer.execute("INSERT INTO books (title) VALUES ('sneaky')")
        (change,) = await changes_of(client, 1, timeout=3.0)
        assert change["row"]["title"] == "sneaky"
        checkpoint = await client.until(lambda f: f["type"] == "checkpoint")
    # A resume from the subscription's first cursor replays it; the later checkpoint covers it.
    async with notifier(db_url) as base, ws_connect(base) as again:
        await again.subscribe(cursor=subscribed["cursor"])
        assert (await changes_of(again, 1))[0]["row"]["title"] == "sneaky"
    async with notifier(db_url) as base, ws_connect(base) as later:
        await later.subscribe(cursor=checkpoint["cursor"])
        with pytest.raises(TimeoutError):
            await later.until(lambda f: f["type"] == "change", timeout=0.5)


async def test_switching_wake_modes_under_load_loses_nothing(db_url: str, aconn: AConn) -> None:
    async with notifier(db_url, poll_interval=0.1) as base, ws_connect(base) as client:
        await client.subscribe()
        stop = asyncio.Event()
        written: list[str] = []

        async def writer(n: int) -> None:
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
                i = 0
                while not stop.is_set():
                    title = f"w{n}-{i}"
                    await conn.execute("INSERT INTO books (title) VALUES (%s)", (title,))
                    written.append(title)
                    i += 1

        writers = [asyncio.create_task(writer(n)) for n in range(4)]
        for mode in ("coalesced", "notify", "coalesced", "notify"):
            await asyncio.sleep(0.3)
            await aconn.execute("SELECT rowcast.set_wake_mode(%s)", (mode,))
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*writers)
        seen = await titles_until(client, set(written), timeout=15.0)
    assert set(seen) == set(written) and len(seen) == len(written)


async def test_wake_mode_lives_in_a_table_only_the_owner_may_change(db_url: str, aconn: AConn) -> None:
    async with login(aconn, db_url, "rowcast_test_moder") as other:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await other.execute("SELECT rowcast.set_wake_mode('coalesced')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await other.execute("UPDATE rowcast.config SET wake_mode = 'coalesced'")
    assert await (await aconn.execute("SELECT rowcast.wake_mode()")).fetchone() == ("notify",)


async def _prepared_transactions(aconn: AConn) -> int:
    row = await (await aconn.execute("SHOW max_prepared_transactions")).fetchone()
    return int(row[0]) if row else 0


async def test_two_phase_commit_works_on_captured_tables_and_is_delivered(db_url: str, aconn: AConn) -> None:
    if await _prepared_transactions(aconn) == 0:
        pytest.skip("this server has max_prepared_transactions = 0")
    async with notifier(db_url, poll_interval=0.2) as base, ws_connect(base) as client:
        subscribed = await client.subscribe()
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as writer:
            for gid, title in (("rc-commit", "prepared"), ("rc-abort", "never")):
                await writer.execute("BEGIN")
                await writer.execute("SET LOCAL rowcast.wake = off")  # the documented opt-out
                await writer.execute("INSERT INTO books (title) VALUES (%s)", (title,))
                await writer.execute(f"PREPARE TRANSACTION '{gid}'")
        await aconn.execute("INSERT INTO books (title) VALUES ('meanwhile')")
        assert (await changes_of(client, 1))[0]["row"]["title"] == "meanwhile"
        # The prepared transaction stays open while the notifier's reads move on past it (the
        # README promises minutes: ROWCAST_TEST_2PC_WAIT=180 shows it; CI waits 2 s).
        deadline = time.monotonic() + float(os.environ.get("ROWCAST_TEST_2PC_WAIT", "2"))
        ticks = 0
        while time.monotonic() < deadline:
            await aconn.execute("UPDATE books SET num_pages = %s WHERE title = 'meanwhile'", (ticks + 1,))
            assert (await changes_of(client, 1))[0]["op"] == "update"
            ticks += 1
            await asyncio.sleep(0.5)
        await aconn.execute("COMMIT PREPARED 'rc-commit'")
        await aconn.execute("ROLLBACK PREPARED 'rc-abort'")
        assert (await changes_of(client, 1, timeout=3.0))[0]["row"]["title"] == "prepared"
        with pytest.raises(TimeoutError):
            await client.until(lambda f: f["type"] == "change", timeout=0.6)
    # And on resume from before the PREPARE: both committed changes, never the rolled-back one.
    async with notifier(db_url) as base, ws_connect(base) as again:
        await again.subscribe(cursor=subscribed["cursor"])
        replayed = [c["row"]["title"] for c in await changes_of(again, 2 + ticks)]
        assert sorted(set(replayed)) == ["meanwhile", "prepared"] and replayed.count("prepared") == 1
        with pytest.raises(TimeoutError):
            await again.until(lambda f: f["type"] == "change", timeout=0.5)


async def test_without_the_opt_out_prepare_fails_as_postgres_documents(aconn: AConn, db_url: str) -> None:
    """The opt-out is needed: a transaction that rang cannot be prepared (Postgres's rule)."""
    if await _prepared_transactions(aconn) == 0:
        pytest.skip("this server has max_prepared_transactions = 0")
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as writer:
        await writer.execute("BEGIN")
        await writer.execute("INSERT INTO books (title) VALUES ('rings')")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            await writer.execute("PREPARE TRANSACTION 'rc-rang'")


async def test_a_fresh_snapshot_never_needs_a_resync_after_a_prune_across_an_open_transaction(
    db_url: str, aconn: AConn
) -> None:
    async with await psycopg.AsyncConnection.connect(db_url) as holder:
        await holder.execute("INSERT INTO authors (name) VALUES ('held open')")  # has an xid now
        for i in range(5):
            await aconn.execute("INSERT INTO books (title) VALUES (%s)", (f"old {i}",))
        await aconn.execute("UPDATE rowcast.changes SET at = now() - interval '3 days'")
        await aconn.execute("SELECT * FROM rowcast.prune('0 seconds')")
        async with notifier(db_url) as base, aiohttp.ClientSession() as http:
            for _ in range(10):
                async with http.get(f"{base}/api/books") as resp:
                    pass
                row = await (await aconn.execute("SELECT pg_current_snapshot()::text")).fetchone()
                assert row is not None
                params = {"table": "books", "cursor": row[0], "wait": "0"}
                async with http.get(f"{base}/changes", params=params) as resp:
                    assert resp.status == 200, await resp.text()
        await holder.commit()
    # The open transaction's change was kept: it was committed after every snapshot above.
    kept = await (
        await aconn.execute("SELECT count(*) FROM rowcast.changes WHERE table_name = 'authors'")
    ).fetchone()
    assert kept == (1,)


@pytest.mark.parametrize("mode", ["notify", "coalesced"])
async def test_a_prune_during_an_open_transaction_never_stops_the_reader(
    db_url: str, aconn: AConn, mode: str
) -> None:
    await aconn.execute("SELECT rowcast.set_wake_mode(%s)", (mode,))
    async with notifier(db_url) as base, ws_connect(base) as client:
        await client.subscribe()
        async with await psycopg.AsyncConnection.connect(db_url) as holder:
            await holder.execute("INSERT INTO books (title) VALUES ('long')")
            await aconn.execute("INSERT INTO books (title) VALUES ('before')")
            await aconn.execute("UPDATE rowcast.changes SET at = now() - interval '3 days'")
            await aconn.execute("SELECT * FROM rowcast.prune('0 seconds')")
            titles = [f"after {i}" for i in range(20)]
            for title in titles:
                await aconn.execute("INSERT INTO books (title) VALUES (%s)", (title,))
            async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
            await holder.commit()
        seen = await titles_until(client, {"before", *titles, "long"})
        assert seen.count("long") == 1
        async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as resp:
            assert resp.status == 200


async def test_a_change_pruned_before_the_notifier_read_it_gets_resync_required(
    db_url: str, aconn: AConn
) -> None:
    """Regression: a 10 kB row pruned before it was read was dropped with a log line only."""
    pool: Pool = Pool(db_url, min_size=1, max_size=2, open=False, kwargs={"autocommit": True})
    await pool.open()
    try:
        hub = Hub()
        listener = Listener(PgChangeSource(db_url, pool), hub)
        listener.position, _ = await listener.source.start()
        resyncs: list[tuple[str, str]] = []
        hub.resync_all = lambda reason, message: resyncs.append((reason, message))  # type: ignore[method-assign]
        await aconn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        await aconn.execute("SELECT rowcast.enable_capture('notes')")
        await aconn.execute("INSERT INTO notes VALUES (1, %s)", ("x" * 10_000,))
        await aconn.execute("UPDATE rowcast.changes SET at = now() - interval '3 days'")
        await await_prunable(aconn)  # another test's transaction may hold the cluster's xmin back
        await aconn.execute("SELECT * FROM rowcast.prune('0 seconds')")
        await listener.read_once()
        assert [reason for reason, _ in resyncs] == ["cursor_expired"]
        await aconn.execute("INSERT INTO books (title) VALUES ('next')")
        published: list[int] = []
        hub.publish = lambda event: published.append(event.id)  # type: ignore[method-assign]
        await listener.read_once()
        assert len(published) == 1  # and the reader goes on from where it restarted
    finally:
        await pool.close()


async def test_a_stuck_listener_never_makes_writers_fail(aconn: AConn, small_queue_server: str) -> None:
    """A LISTEN session that never reads holds the NOTIFY queue: capture stops ringing at half full."""
    url = small_queue_server
    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as stuck,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as writer,
        # The client reads only once the writing is done: room in its queue, and no ping timeout.
        notifier(url, poll_interval=0.1, queue_messages=100_000, queue_bytes=64 << 20, heartbeat=300) as base,
        ws_connect(base) as client,
    ):
        await stuck.execute("LISTEN rowcast")
        # Inside a transaction a backend takes no notifications: the queue's tail stays put, as
        # behind a notifier that stopped reading (SIGSTOP) once its socket buffers are full.
        await stuck.execute("BEGIN")
        await stuck.execute("SELECT 1")
        await client.subscribe()
        usage = 0.0
        n = 0
        while usage < 0.45 or n < 2000:
            for _ in range(500):
                await writer.execute("INSERT INTO books (title) VALUES (%s)", (f"t{n}",))
                n += 1
            row = await (await writer.execute("SELECT pg_notification_queue_usage()")).fetchone()
            usage = float(row[0]) if row else 0.0
            assert n < 30_000, "the queue never filled"
        for _ in range(2000):  # well past the point where Postgres would refuse
            await writer.execute("INSERT INTO books (title) VALUES (%s)", (f"t{n}",))
            n += 1
        row = await (await writer.execute("SELECT pg_notification_queue_usage()")).fetchone()
        assert row is not None and float(row[0]) < 0.6
        seen = await titles_until(client, {f"t{i}" for i in range(n)}, timeout=60.0)
        assert len(seen) == n


async def test_a_writer_that_rang_before_the_queue_filled_still_commits(small_queue_server: str) -> None:
    """The queue filled between a writer's change and its COMMIT (a stuck listener, a flood of
    8 kB notifications from any login): a wake-up queued at change time made COMMIT fail with
    "too many notifications in the NOTIFY queue". The doorbell is rung at commit, after the
    check, so the writer commits and its change arrives by the poll."""
    url = small_queue_server
    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as stuck,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as flooder,
        await psycopg.AsyncConnection.connect(url) as writer,
        notifier(url, poll_interval=0.1) as base,
        ws_connect(base) as client,
    ):
        await client.subscribe()
        await stuck.execute("LISTEN anything")
        await stuck.execute("BEGIN")
        await stuck.execute("SELECT 1")  # holds the queue's tail from here on
        await writer.execute("INSERT INTO books (title) VALUES ('rang while the queue was empty')")
        usage = 0.0
        with contextlib.suppress(psycopg.errors.ProgramLimitExceeded):
            while usage < 0.99:
                await flooder.execute("SELECT pg_notify('flood', repeat('x', 7900))")
                row = await (await flooder.execute("SELECT pg_notification_queue_usage()")).fetchone()
                usage = float(row[0]) if row else 0.0
        await writer.commit()  # raised ProgramLimitExceeded before
        assert await titles_until(client, {"rang while the queue was empty"}) == [
            "rang while the queue was empty"
        ]
        await stuck.execute("COMMIT")


@pytest.fixture
async def small_queue_server(pg_tmp: Any) -> AsyncIterator[str]:
    """A private Postgres 18 whose NOTIFY queue is 64 pages (512 kB)."""
    from rowcast.embedded import EmbeddedPostgres
    from tests.pg import install_with_demo

    server = EmbeddedPostgres(pg_tmp / "pg")
    server.start()
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            version = conn.info.server_version
            if version < 170000:
                pytest.skip("max_notify_queue_pages needs Postgres 17+")
            conn.execute("ALTER SYSTEM SET max_notify_queue_pages = 64")
        server.stop()
        server.start()
        await asyncio.to_thread(install_with_demo, server.url())
        yield server.url()
    finally:
        server.destroy()
