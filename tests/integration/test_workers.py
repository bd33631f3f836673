"""`--workers 2`: real supervisor and worker processes sharing one port (SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import psutil
import psycopg
import pytest
from aiohttp import web

from rowcast import workers
from rowcast.client import Change, subscribe
from rowcast.errors import PoolerDetected, RowcastError
from rowcast.settings import Settings
from tests.servers import Process, Running, WsClient, free_port, rowcast_server, wait_until, ws_connect

pytestmark = pytest.mark.timeout(180)

WORKERS_2 = {"ROWCAST_WORKERS": "2", "ROWCAST_AUTH": "open", "ROWCAST_POLL_INTERVAL": "50ms"}


def workers_of(server: Running) -> list[psutil.Process]:
    assert server.process.proc is not None
    return psutil.Process(server.process.proc.pid).children()


async def answering_workers(base: str, timeout: float = 20.0) -> set[int]:
    """Ask /healthz over fresh connections until both workers have answered (the kernel picks one)."""
    seen: set[int] = set()

    async def both() -> bool:
        async with aiohttp.ClientSession() as http, http.get(base + "/healthz") as resp:
            if resp.status == 200:
                body = await resp.json()
                assert resp.headers["Rowcast-Worker"] == str(body["worker"])
                seen.add(body["worker"])
        return seen == {1, 2}

    await wait_until(both, timeout)
    return seen


async def insert_books(db_url: str, count: int, prefix: str, pause: float = 0.0) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        for i in range(count):
            await conn.execute("INSERT INTO books (title) VALUES (%s)", (f"{prefix}-{i}",))
            await asyncio.sleep(pause)


async def log_ids(db_url: str) -> set[int]:
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        rows = await (
            await conn.execute("SELECT id FROM rowcast.changes WHERE table_name = 'books'")
        ).fetchall()
    return {int(r[0]) for r in rows}


@asynccontextmanager
async def two_workers(db_url: str, command: str = "notifier") -> AsyncIterator[Running]:
    async with rowcast_server(command, db_url, WORKERS_2) as server:
        assert await answering_workers(server.base) == {1, 2}
        yield server


async def test_clients_land_on_both_workers_and_each_subscription_gets_every_change_once(
    db_url: str,
) -> None:
    async with two_workers(db_url) as server:
        assert await answering_workers(server.base) == {1, 2}
        async with aiohttp.ClientSession() as http:
            url = server.base.replace("http", "ws", 1) + "/ws"
            sockets = [await http.ws_connect(url) for _ in range(24)]
            try:
                # The 101 response names the worker that took the socket.
                landed = Counter(ws._response.headers["Rowcast-Worker"] for ws in sockets)
                assert set(landed) == {"1", "2"}, landed
                for ws in sockets:
                    for ref in ("a", "b"):
                        await ws.send_json({"type": "subscribe", "ref": ref, "table": "books"})
                for ws in sockets:
                    await _until_subscribed(ws, {"a", "b"})
                await insert_books(db_url, 30, "fan")
                expected = await log_ids(db_url)
                received = await asyncio.gather(*(_changes(ws, 2 * len(expected)) for ws in sockets))
            finally:
                await asyncio.gather(*(ws.close() for ws in sockets))
    for frames in received:
        per_subscription = Counter((f["ref"], f["id"]) for f in frames)
        assert set(per_subscription) == {(ref, i) for ref in ("a", "b") for i in expected}
        assert set(per_subscription.values()) == {1}, "a change arrived twice on one subscription"


async def _until_subscribed(ws: aiohttp.ClientWebSocketResponse, refs: set[str]) -> None:
    pending = set(refs)
    async with asyncio.timeout(10):
        while pending:
            frame = await ws.receive_json()
            assert frame["type"] != "error", frame
            if frame["type"] == "subscribed":
                pending.discard(frame["ref"])


async def _changes(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, object]]:
    """`count` change frames, then whatever else arrives within a second (a duplicate would)."""
    frames: list[dict[str, object]] = []
    async with asyncio.timeout(15):
        while len(frames) < count:
            frame = await ws.receive_json()
            if frame["type"] == "change":
                frames.append(frame)
    try:
        async with asyncio.timeout(1.0):
            while True:
                frame = await ws.receive_json()
                if frame["type"] == "change":
                    frames.append(frame)
    except TimeoutError:
        pass
    return frames


class Consumer:
    """The Python client, which reconnects with backoff and resumes from its cursor by itself."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.ids: list[int] = []
        self.live = asyncio.Event()
        self.reconnects = 0

    def status(self, state: str, cursor: str | None) -> None:
        if state == "live":
            self.live.set()
        elif state == "reconnecting":
            self.reconnects += 1

    async def run(self) -> None:
        change: Change
        async for change in subscribe(self.base, "books", on_status=self.status, max_backoff=0.5):
            self.ids.append(change.id)


async def test_a_killed_worker_is_restarted_and_its_clients_resume_with_nothing_lost(db_url: str) -> None:
    async with two_workers(db_url) as server:
        consumers = [Consumer(server.base) for _ in range(16)]
        tasks = [asyncio.create_task(c.run()) for c in consumers]
        try:
            await asyncio.wait_for(asyncio.gather(*(c.live.wait() for c in consumers)), 15)
            writing = asyncio.create_task(insert_books(db_url, 60, "kill", pause=0.02))
            await asyncio.sleep(0.3)
            victim = workers_of(server)[0]
            victim.send_signal(signal.SIGKILL)
            await writing
            await wait_until(
                lambda: (
                    len(workers_of(server)) == 2 and victim.pid not in {p.pid for p in workers_of(server)}
                ),
                timeout=20,
            )
            assert await answering_workers(server.base) == {1, 2}
            expected = await log_ids(db_url)
            await wait_until(lambda: all(set(c.ids) >= expected for c in consumers), timeout=20)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert any(c.reconnects for c in consumers), "no client was on the killed worker"
        for c in consumers:
            assert sorted(c.ids) == sorted(set(c.ids)) and set(c.ids) == expected
        log = server.stop()
    assert f"(pid {victim.pid}) exited with -9: restarting it in" in log
    assert "restarted (pid" in log


async def test_sigterm_on_the_supervisor_drains_every_worker_and_exits_0(db_url: str) -> None:
    async with two_workers(db_url) as server:
        pids = [p.pid for p in workers_of(server)]
        clients = [ws_connect(server.base) for _ in range(8)]
        opened = [await c.__aenter__() for c in clients]
        for client in opened:
            await client.subscribe()
        assert server.process.proc is not None
        server.process.proc.send_signal(signal.SIGTERM)

        async def close_code(client: WsClient) -> int | None:
            async with asyncio.timeout(15):
                while (await client.ws.receive()).type == aiohttp.WSMsgType.TEXT:
                    pass
            return client.ws.close_code

        codes = await asyncio.gather(*(close_code(c) for c in opened))
        for c in clients:
            await c.__aexit__(None, None, None)
        code = await asyncio.to_thread(server.process.proc.wait, 30)
        assert code == 0, server.stop()
        assert codes == [1001] * len(opened)
        assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids)


def test_a_taken_port_is_one_line_and_a_non_zero_exit(db_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "rowcast.cli", "notifier", "--workers", "2", "--port", str(port)],
            capture_output=True,
            text=True,
            env={**os.environ, "DATABASE_URL": db_url, "ROWCAST_AUTH": "open"},
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"rowcast: port {port} on 127.0.0.1 is already in use: stop what runs there or pick another with --port"
    )


async def test_workers_exit_when_the_supervisor_is_killed(db_url: str) -> None:
    port = free_port()
    process = Process(["notifier", "--port", str(port), "--database-url", db_url], WORKERS_2).start()
    assert process.proc is not None
    parent = psutil.Process(process.proc.pid)
    try:
        children = await wait_until(lambda: len(parent.children()) == 2 and parent.children(), timeout=20)
        await wait_until(lambda: _listening(port), timeout=20)
        process.kill()
        _, alive = await asyncio.to_thread(psutil.wait_procs, children, 30)
        assert not alive, "workers outlived their supervisor"
        assert not _listening(port)
    finally:
        process.close()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_up_with_two_workers_serves_the_page_and_the_api(db_url: str) -> None:
    async with two_workers(db_url, "up") as server:
        assert await answering_workers(server.base) == {1, 2}
        async with aiohttp.ClientSession() as http:
            async with http.get(server.base + "/") as resp:
                assert resp.status == 200 and "text/html" in resp.headers["Content-Type"]
            async with ws_connect(server.base) as client:
                await client.subscribe()
                async with http.post(server.base + "/api/books", json={"title": "Two workers"}) as resp:
                    assert resp.status == 201, await resp.text()
                change = await client.until(lambda f: f["type"] == "change", timeout=10)
            async with http.get(server.base + "/api/books") as resp:
                assert [b["title"] for b in (await resp.json())["items"]] == ["Two workers"]
        assert change["row"]["title"] == "Two workers"
        log = server.stop()
    # Migrations and capture run once, in the supervisor: the workers only serve.
    assert log.count("rowcast is up:") == 1


def refusing_app(settings: Settings) -> web.Application:
    """A worker's app that cannot be built, as behind a transaction-pooling PgBouncer."""
    raise PoolerDetected


def test_a_worker_that_cannot_start_stops_the_rest_with_its_one_line_reason(
    capfd: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(auth="open", port=free_port(), workers=2)
    with pytest.raises(RowcastError) as refused:
        workers.serve("tests.integration.test_workers:refusing_app", settings)
    assert re.fullmatch(
        r"worker [12]: LISTEN is not possible through .*directly to Postgres\.", str(refused.value)
    )
    assert "Traceback" not in capfd.readouterr().err
    assert not _listening(settings.port)
