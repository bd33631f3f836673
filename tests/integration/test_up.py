"""`rowcast up` as a new user runs it: a real process, a fresh data dir, the printed psql line."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from rowcast.embedded import binary
from tests.integration.test_cli import ROWCAST, rowcast
from tests.servers import free_port, wait_healthy, ws_connect


class Up:
    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "PG", "ROWCAST_"))}
        env = {**base, "ROWCAST_DATA_DIR": str(data_dir), **(env or {})}
        self.proc = subprocess.Popen(
            [ROWCAST, "up", "--port", str(self.port), *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.base = f"http://127.0.0.1:{self.port}"

    def read_until(self, prefix: str, timeout: float = 60) -> str:
        assert self.proc.stdout is not None

        def read() -> str:
            for line in self.proc.stdout:  # type: ignore[union-attr]
                self.lines.append(line.rstrip("\n"))
                if line.startswith(prefix):
                    return line.rstrip("\n")
            raise AssertionError(f"rowcast up exited before printing {prefix!r}:\n" + "\n".join(self.lines))

        return _with_timeout(read, timeout)

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(30)
        if self.proc.stdout is not None:
            self.lines += self.proc.stdout.read().splitlines()
            self.proc.stdout.close()
        return code

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)


def _with_timeout(fn, timeout: float):  # type: ignore[no-untyped-def]
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout)


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "postgres" and str(data_dir) in cmdline:
            found.append(proc)
    return found


@pytest.fixture
def data_dir(pg_tmp: Path) -> Iterator[Path]:
    yield pg_tmp / "data"
    for proc in postgres_processes(pg_tmp):
        proc.kill()


@pytest.mark.timeout(180)
async def test_up_serves_the_page_and_a_psql_insert_reaches_a_websocket(data_dir: Path) -> None:
    up = Up(data_dir, "--demo")
    try:
        first = await asyncio.to_thread(up.read_until, "rowcast is up:")
        assert first == f"rowcast is up: {up.base}/"
        psql_line = await asyncio.to_thread(up.read_until, "psql:")
        await asyncio.to_thread(up.read_until, "Ctrl-C")
        await wait_healthy(up.base)
        banner = "\n".join(up.lines)
        assert "auth: open" in banner and "INSERT INTO books" in banner and "curl" in banner
        assert "seeded 4 demo books" in banner
        # The quick start installs what `rowcast migrate` does not, and says so (issue 16).
        assert "created cluster-wide roles (NOLOGIN, for every database of this server)" in banner
        assert "demo: created public.books, public.authors (rowcast demo remove drops them)" in banner
        async with aiohttp.ClientSession() as http:
            async with http.get(up.base + "/") as resp:
                assert resp.status == 200 and "text/html" in resp.headers["Content-Type"]
                assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
            async with http.get(up.base + "/api/books") as resp:
                assert len((await resp.json())["items"]) == 4
        psql = shlex.split(psql_line.removeprefix("psql:").strip())
        async with ws_connect(up.base) as client:
            await client.subscribe()
            result = await asyncio.to_thread(
                subprocess.run,
                [*psql, "-c", "INSERT INTO books (title, author) VALUES ('Typed in psql', 'A DBA')"],
                capture_output=True,
                text=True,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            change = await client.until(lambda f: f["type"] == "change", timeout=5)
        assert change["row"]["title"] == "Typed in psql" and change["actor"]["app"] == "psql"
        tail = subprocess.Popen(
            [ROWCAST, "tail", "books", "--json", "--url", up.base],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert tail.stdout is not None
            ready = json.loads(await asyncio.wait_for(asyncio.to_thread(tail.stdout.readline), 20))
            assert ready["type"] == "ready" and ready["url"] == up.base and ready["table"] == "books"
            await asyncio.to_thread(
                subprocess.run,
                [*psql, "-c", "UPDATE books SET num_pages = 99 WHERE title = 'Typed in psql'"],
                check=True,
                capture_output=True,
            )
            line = await asyncio.wait_for(asyncio.to_thread(tail.stdout.readline), 10)
        finally:
            tail.terminate()
            tail.communicate(timeout=10)
        event = json.loads(line)
        assert (
            event["type"] == "change"
            and event["op"] == "update"
            and event["row"]["num_pages"] == 99
            and event["old"] == {"num_pages": None, "version": 1, "updated_at": event["old"]["updated_at"]}
        )
    finally:
        code = up.interrupt()
    assert code == 0, "\n".join(up.lines)
    assert postgres_processes(data_dir) == [], "embedded Postgres left running"


async def count_books(base: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(base + "/api/books") as resp:
        return len((await resp.json())["items"])


@pytest.mark.timeout(180)
def test_second_up_reuses_the_data_and_seeds_only_once(data_dir: Path) -> None:
    for _ in range(2):
        up = Up(data_dir, "--demo")
        up.read_until("rowcast is up:")
        asyncio.run(wait_healthy(up.base))

        assert asyncio.run(count_books(up.base)) == 4
        assert up.interrupt() == 0


@pytest.mark.timeout(120)
def test_sigterm_stops_up_cleanly_and_closes_sockets_with_1001(data_dir: Path) -> None:
    up = Up(data_dir)
    up.read_until("rowcast is up:")
    asyncio.run(wait_healthy(up.base))

    async def watch() -> int | None:
        async with ws_connect(up.base) as client:
            await client.subscribe()
            up.proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(15):
                while True:
                    msg = await client.ws.receive()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        return client.ws.close_code

    assert asyncio.run(watch()) == 1001
    assert up.proc.wait(30) == 0
    assert up.proc.stdout is not None
    said = up.proc.stdout.read().splitlines()
    up.proc.stdout.close()
    assert said[-1] == "rowcast stopped; embedded Postgres stopped", said
    assert postgres_processes(data_dir) == []


@pytest.mark.timeout(120)
def test_banner_psql_line_runs_when_the_embedded_server_was_already_running(data_dir: Path) -> None:
    env = {"ROWCAST_DATA_DIR": str(data_dir)}
    assert rowcast("db", "start", env=env).returncode == 0
    try:
        up = Up(data_dir)
        psql_line = up.read_until("psql:")
        asyncio.run(wait_healthy(up.base))
        psql = shlex.split(psql_line.removeprefix("psql:").strip())
        assert psql[0] == str(binary("psql")), "the bundled psql: a machine may have none, or an old one"
        result = subprocess.run(
            [*psql, "-At", "-c", "SELECT count(*) FROM rowcast.changes"],
            capture_output=True,
            text=True,
            env={},
        )
        assert result.returncode == 0 and result.stdout.strip().isdigit(), (psql_line, result.stderr)
        assert up.interrupt() == 0
        assert up.lines[-1] == "rowcast stopped", up.lines  # up did not start it, so it leaves it running
        assert rowcast("db", "status", env=env).returncode == 0
    finally:
        rowcast("db", "stop", env=env)


@pytest.mark.timeout(120)
def test_with_keep_db_the_stop_line_says_the_server_runs_on_and_how_to_stop_it(data_dir: Path) -> None:
    up = Up(data_dir, env={"ROWCAST_KEEP_DB": "1"})
    up.read_until("rowcast is up:")
    asyncio.run(wait_healthy(up.base))
    try:
        assert up.interrupt() == 0
        assert up.lines[-1] == (
            "rowcast stopped; the embedded Postgres keeps running (ROWCAST_KEEP_DB=1): "
            f"rowcast db stop --data-dir {data_dir} stops it"
        ), up.lines
        assert rowcast("db", "status", env={"ROWCAST_DATA_DIR": str(data_dir)}).returncode == 0
    finally:
        rowcast("db", "stop", env={"ROWCAST_DATA_DIR": str(data_dir)})


def test_port_taken_gives_one_clear_line(data_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "ROWCAST_DATA_DIR": str(data_dir)}
        env.pop("DATABASE_URL", None)
        result = subprocess.run(
            [sys.executable, "-m", "rowcast.cli", "up", "--port", str(port)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"rowcast: port {port} on 127.0.0.1 is already in use: stop what runs there or pick another with --port"
    )
