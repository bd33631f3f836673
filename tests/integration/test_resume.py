"""Gap-free resume under concurrency and faults: nothing lost, nothing twice after the client."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from rowcast.notifier.app import create_app

from rowcast.client import Change, RowRule, subscribe
from rowcast.embedded import EmbeddedPostgres
from tests.pg import install_with_demo
from tests.servers import (
    Process,
    free_port,
    serve,
    settings_for,
    wait_healthy,
    wait_port,
    wait_until,
    ws_connect,
)

AConn = psycopg.AsyncConnection[tuple[Any, ...]]


async def log_ids(url: str, table: str = "books") -> list[int]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        rows = await (
            await conn.execute("SELECT id FROM rowcast.changes WHERE table_name = %s ORDER BY id", (table,))
        ).fetchall()
    return [r[0] for r in rows]


async def out_of_order_writer(url: str, n: int, seed: int) -> None:
    """Transactions that take their change id early and commit late, so commit order != id order."""
    rng = random.Random(seed)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        for i in range(n):
            async with conn.transaction():
                await conn.execute("INSERT INTO books (title) VALUES (%s)", (f"w{seed}-{i}",))
                if rng.random() < 0.5:
                    await conn.execute(
                        "UPDATE books SET num_pages = %s WHERE title = %s", (i + 1, f"w{seed}-{i}")
                    )
                await asyncio.sleep(rng.uniform(0, 0.03))
            await asyncio.sleep(rng.uniform(0, 0.01))


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel a collector (the client goes away) and wait until it has."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Collector:
    """A Python-client consumer that disconnects at will and resumes from its last cursor."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.rule = RowRule()
        self.cursor: str | None = None
        self.changes: list[Change] = []
        self.live = asyncio.Event()

    def status(self, state: str, cursor: str | None) -> None:
        if cursor is not None and state in ("live", "checkpoint"):
            self.cursor = cursor
        if state == "live":
            self.live.set()

    async def run(self, base: str | None = None) -> None:
        self.live.clear()
        async for change in subscribe(
            base or self.base, "books", cursor=self.cursor, rule=self.rule, on_status=self.status
        ):
            self.changes.append(change)

    @property
    def ids(self) -> list[int]:
        return [c.id for c in self.changes]


@pytest.fixture(params=["notify", "coalesced"])
def wake_mode(request: pytest.FixtureRequest, db_url: str) -> str:
    """Every test here runs in both wake-up modes (README: Wake-up modes)."""
    mode: str = request.param
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT rowcast.set_wake_mode(%s)", (mode,))
    return mode


@pytest.fixture
async def notifier(db_url: str, wake_mode: str) -> AsyncIterator[str]:
    async with serve(create_app(settings_for(db_url))) as base:
        await wait_healthy(base)
        yield base


async def test_resume_after_disconnects_while_four_writers_commit_out_of_id_order(
    notifier: str, db_url: str
) -> None:
    collector = Collector(notifier)
    task = asyncio.create_task(collector.run())
    await asyncio.wait_for(collector.live.wait(), 5)
    writers = asyncio.gather(*(out_of_order_writer(db_url, 40, seed) for seed in range(4)))
    for _ in range(4):  # drop the connection at random moments while writers run
        await asyncio.sleep(random.uniform(0.1, 0.3))
        await stop_task(task)
        await asyncio.sleep(random.uniform(0, 0.2))
        task = asyncio.create_task(collector.run())
    await writers
    expected = await log_ids(db_url)
    await wait_until(lambda: set(collector.ids) >= set(expected), timeout=10)
    await stop_task(task)
    assert sorted(collector.ids) == expected  # every change, none twice
    assert len(expected) > 160


async def test_listen_connection_terminated_mid_stream_loses_nothing(
    notifier: str, db_url: str, aconn: AConn
) -> None:
    collector = Collector(notifier)
    task = asyncio.create_task(collector.run())
    await asyncio.wait_for(collector.live.wait(), 5)
    writers = asyncio.gather(*(out_of_order_writer(db_url, 30, seed) for seed in range(2)))
    await asyncio.sleep(0.2)
    for _ in range(2):
        killed = await (
            await aconn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'rowcast-listener' AND datname = current_database()"
            )
        ).fetchone()
        assert killed == (1,)
        await asyncio.sleep(0.3)
    await writers
    expected = await log_ids(db_url)
    await wait_until(lambda: set(collector.ids) >= set(expected), timeout=10)
    await stop_task(task)
    assert sorted(collector.ids) == expected


@pytest.fixture
def own_postgres(pg_tmp: Path) -> Iterator[EmbeddedPostgres]:
    """A private embedded server this test may restart."""
    server = EmbeddedPostgres(pg_tmp / "pg")
    server.start()
    install_with_demo(server.url())
    yield server
    server.destroy()


@pytest.mark.parametrize("mode", ["notify", "coalesced"])
async def test_postgres_restart_mid_stream_loses_nothing_and_health_reports_it(
    own_postgres: EmbeddedPostgres, mode: str
) -> None:
    url = own_postgres.url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT rowcast.set_wake_mode(%s)", (mode,))
    async with serve(create_app(settings_for(url))) as base:
        await wait_healthy(base)
        collector = Collector(base)
        task = asyncio.create_task(collector.run())
        await asyncio.wait_for(collector.live.wait(), 5)
        stop = asyncio.Event()

        async def writer() -> None:
            i = 0
            while not stop.is_set():
                try:
                    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                        while not stop.is_set():
                            await conn.execute("INSERT INTO books (title) VALUES (%s)", (f"r{i}",))
                            i += 1
                            await asyncio.sleep(0.01)
                except psycopg.OperationalError:
                    await asyncio.sleep(0.05)

        writing = asyncio.create_task(writer())
        await asyncio.sleep(0.3)
        health: list[int] = []

        async def poll_health() -> None:
            async with aiohttp.ClientSession() as http:
                while not stop.is_set():
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"{base}/healthz") as resp:
                            health.append(resp.status)
                    await asyncio.sleep(0.02)

        poller = asyncio.create_task(poll_health())
        await asyncio.to_thread(own_postgres.restart)
        await wait_healthy(base, timeout=30)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(writing, poller)
        expected = await log_ids(url)
        await wait_until(lambda: set(collector.ids) >= set(expected), timeout=15)
        await stop_task(task)
    assert sorted(collector.ids) == expected
    assert 503 in health and health[-1] == 200
    assert health.index(503) < len(health) - 1 - health[::-1].index(200)


async def test_client_moving_between_two_notifier_processes_resumes_with_no_gap(
    db_url: str, wake_mode: str
) -> None:
    ports = [free_port(), free_port()]
    procs = [
        Process(["notifier", "--auth", "open", "--port", str(p), "--database-url", db_url], {}).start()
        for p in ports
    ]
    try:
        for port in ports:
            await asyncio.to_thread(wait_port, port)
            await wait_healthy(f"http://127.0.0.1:{port}")
        a, b = (f"http://127.0.0.1:{p}" for p in ports)
        collector = Collector(a)
        task = asyncio.create_task(collector.run())
        await asyncio.wait_for(collector.live.wait(), 5)
        writers = asyncio.gather(*(out_of_order_writer(db_url, 30, s) for s in range(3)))
        await asyncio.sleep(0.3)
        # Replica A dies without a goodbye; the client moves to replica B with its cursor.
        procs[0].kill()
        await asyncio.sleep(0.2)
        await stop_task(task)
        task = asyncio.create_task(collector.run(b))
        await writers
        expected = await log_ids(db_url)
        await wait_until(lambda: set(collector.ids) >= set(expected), timeout=10)
        await stop_task(task)
        assert sorted(collector.ids) == expected
    finally:
        for proc in procs:
            proc.stop()
            proc.close()


async def test_stalled_reader_gets_4008_while_a_fast_reader_keeps_receiving(
    db_url: str, aconn: AConn, wake_mode: str
) -> None:
    settings = settings_for(db_url, queue_messages=200, queue_bytes=256 * 1024)
    async with serve(create_app(settings)) as base:
        await wait_healthy(base)
        async with ws_connect(base) as stalled, ws_connect(base) as fast:
            await stalled.subscribe()
            await fast.subscribe()
            received = 0

            async def read_fast() -> None:
                nonlocal received
                while received < 20000:
                    if (await fast.recv(10))["type"] == "change":
                        received += 1

            reading = asyncio.create_task(read_fast())
            await aconn.execute(
                "INSERT INTO books (title, author) SELECT 'bulk ' || g, repeat('a', 200) FROM generate_series(1, 20000) g"
            )
            await asyncio.wait_for(reading, 30)
            # Now the stalled reader reads: what was queued, then the close.
            async with asyncio.timeout(15):
                while True:
                    msg = await stalled.ws.receive()
                    if msg.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING,
                    ):
                        break
            assert stalled.ws.close_code == 4008
    assert received == 20000


async def test_a_burst_of_changes_does_not_overflow_a_fast_client(
    db_url: str, aconn: AConn, wake_mode: str
) -> None:
    """Regression: a log read (coalesced mode) published thousands of events without yielding,
    so even a client reading as fast as it could overflowed its bounded queue and got 4008."""
    settings = settings_for(db_url, queue_messages=100, queue_bytes=1024 * 1024)
    async with serve(create_app(settings)) as base:
        await wait_healthy(base)
        async with ws_connect(base) as client:
            await client.subscribe()
            await aconn.execute("INSERT INTO books (title) SELECT 'b' || g FROM generate_series(1, 5000) g")
            got = 0
            while got < 5000:
                if (await client.recv(10))["type"] == "change":
                    got += 1
    assert got == 5000
