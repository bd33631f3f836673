"""Run rowcast apps for tests: in-process on a real port, or as real `rowcast` processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from rowcast.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def serve(app: web.Application, port: int | None = None) -> AsyncIterator[str]:
    """Run `app` on 127.0.0.1 on a real port; yields its base URL."""
    runner = web.AppRunner(app, shutdown_timeout=5)
    await runner.setup()
    port = port or free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def settings_for(db_url: str, **changes: Any) -> Settings:
    base: dict[str, Any] = {
        "database_url": db_url,
        "auth": "open",
        "poll_interval": 0.05,
        "client_checkpoint_interval": 0.2,
    }
    base.update(changes)
    return Settings(**base)


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll a condition with a deadline (for state we cannot await directly)."""
    async with asyncio.timeout(timeout):
        while True:
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(interval)


_SETTLED = (
    "SELECT coalesce(max(xid) < pg_snapshot_xmin(pg_current_snapshot()), true) FROM rowcast.changes"
)


def wait_prunable(conn: Any, timeout: float = 60.0) -> None:
    """Wait until every logged change is older than every running snapshot, so `rowcast.prune` may
    take it. On a shared server (ROWCAST_TEST_DSN, parallel workers) another test's open
    transaction holds the cluster's xmin back, and prune rightly keeps what a snapshot may miss."""
    deadline = time.monotonic() + timeout
    while not conn.execute(_SETTLED).fetchone()[0]:
        if time.monotonic() > deadline:
            raise TimeoutError("a transaction on the server held the xmin back for a minute")
        time.sleep(0.05)


async def await_prunable(aconn: Any, timeout: float = 60.0) -> None:
    """wait_prunable for an async connection."""
    async def settled() -> bool:
        return bool((await (await aconn.execute(_SETTLED)).fetchone())[0])

    await wait_until(settled, timeout=timeout, interval=0.05)


async def wait_healthy(base: str, timeout: float = 20.0) -> None:
    async def ok() -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    await wait_until(ok, timeout, 0.05)


class WsClient:
    """A raw WebSocket client speaking the rowcast protocol, for assertions."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    async def send(self, **frame: Any) -> None:
        await self.ws.send_str(json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            msg = await self.ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"socket closed: {msg.type} {msg.data} {msg.extra}")
        frame: dict[str, Any] = json.loads(msg.data)
        self.frames.append(frame)
        return frame

    async def until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if predicate(frame):
                    return frame

    async def subscribe(self, ref: str = "s", table: str = "books", **extra: Any) -> dict[str, Any]:
        await self.send(type="subscribe", ref=ref, table=table, **extra)
        return await self.until(
            lambda f: f.get("ref") == ref and f["type"] in ("subscribed", "error", "resync_required")
        )


@asynccontextmanager
async def ws_connect(base: str, **kwargs: Any) -> AsyncIterator[WsClient]:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(base.replace("http", "ws", 1) + "/ws", **kwargs) as ws,
    ):
        yield WsClient(ws)


class Process:
    """A real `rowcast ...` process."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.env = env
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Process:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rowcast.cli", *self.args],
            # One process unless a test asks for workers: per-process limits and PIDs are what most
            # tests look at (tests/integration/test_workers.py covers N processes).
            env={**os.environ, "ROWCAST_WORKERS": "1", **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)

    def output(self) -> str:
        """Everything the process printed (once it has exited)."""
        assert self.proc is not None and self.proc.stdout is not None
        if self.proc.poll() is None or self.proc.stdout.closed:
            return ""
        text = self.proc.stdout.read()
        self.proc.stdout.close()
        return text


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


class Running:
    """A `rowcast` server process a test talks to: its base URL and, once stopped, its output."""

    def __init__(self, base: str, port: int, process: Process) -> None:
        self.base = base
        self.port = port
        self.process = process
        self.log = ""

    def stop(self) -> str:
        """Stop the process (SIGINT) and return everything it printed."""
        if not self.log:
            self.process.stop()
            self.log = self.process.output()
            self.process.close()
        return self.log


@asynccontextmanager
async def rowcast_server(
    command: str, db_url: str, env: dict[str, str] | None = None, *flags: str
) -> AsyncIterator[Running]:
    """Run `rowcast <command> --port P --database-url db_url` and wait until it answers."""
    port = free_port()
    process = Process([command, "--port", str(port), "--database-url", db_url, *flags], env or {}).start()
    running = Running(f"http://127.0.0.1:{port}", port, process)
    try:
        await asyncio.to_thread(wait_port, port)
        if command != "api":
            await wait_healthy(running.base)
        yield running
    finally:
        running.stop()
