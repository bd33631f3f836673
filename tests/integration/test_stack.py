"""`rowcast stack` for real: every request goes through Debian's nginx to the api and two replicas.

The compose topology had only ever been parsed. Here the same nginx template is rendered and
run, and clients are counted while replicas are killed, restarted one at a time and drained:
the exact-once check is by change id and by the titles the writers committed (zero lost: every
committed insert arrives; zero phantom: no rolled-back one does; no id twice).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil
import psycopg
import pytest

from rowcast.client import subscribe
from tests.integration.test_cli import ROWCAST
from tests.servers import free_port, wait_until, ws_connect

NGINX = next((p for p in ("/usr/sbin/nginx", "/usr/bin/nginx") if os.access(p, os.X_OK)), None)
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="Debian's nginx is not installed (apt-get install nginx; .ci/run does it)"
)


@dataclass
class Stack:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def replicas(self) -> dict[int, psutil.Process]:
        """The notifier processes now running, by the port each serves."""
        found = {}
        for child in psutil.Process(self.proc.pid).children():
            with suppress(psutil.NoSuchProcess):
                argv = child.cmdline()
                if "notifier" in argv and "--port" in argv:
                    found[int(argv[argv.index("--port") + 1])] = child
        return found

    async def wait_replica_back(self, port: int, old_pid: int, timeout: float = 30) -> None:
        """The stack restarts a dead replica on its port (as compose's restart policy does)."""

        async def back() -> bool:
            proc = self.replicas().get(port)
            if proc is None or proc.pid == old_pid:
                return False
            try:
                async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(back, timeout, 0.1)


def start_stack(db: dict[str, str], log: Path, *extra: str) -> Stack:
    """`db` is DATABASE_URL=... or ROWCAST_DATA_DIR=... (the embedded Postgres)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "PG", "ROWCAST_"))}
    env.update(db, ROWCAST_LOG_LEVEL="WARNING")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [ROWCAST, "stack", "--port", str(port), "--replicas", "2", *extra],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    stack = Stack(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 90
    while "rowcast stack is up:" not in stack.output():
        assert proc.poll() is None, f"rowcast stack exited early:\n{stack.output()}"
        assert time.monotonic() < deadline, f"rowcast stack not up after 90s:\n{stack.output()}"
        time.sleep(0.1)
    return stack


@pytest.fixture
def stack(db_url: str, tmp_path: Path) -> Iterator[Stack]:
    running = start_stack({"DATABASE_URL": db_url}, tmp_path / "stack.log", "--auth", "open")
    yield running
    if running.proc.poll() is None:
        running.proc.send_signal(signal.SIGINT)
        try:
            running.proc.wait(60)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(running.proc.pid).children(recursive=True):
                child.kill()
            running.proc.kill()


# -- writers and counting clients --------------------------------------------------------------


@dataclass
class Ledger:
    """What the writers committed and what they rolled back (must never be delivered)."""

    committed: set[str] = field(default_factory=set)
    rolled_back: set[str] = field(default_factory=set)


async def write(
    db_url: str, ledger: Ledger, tag: str, count: int, pause: float = 0.01, stop: asyncio.Event | None = None
) -> None:
    """Insert `count` books one transaction each; every fifth is rolled back instead.

    Stopped with `stop`, between transactions: a cancel could land after a COMMIT reached the
    server and before the ledger heard of it, and a delivered row would look like a phantom."""
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        for n in range(count):
            if stop is not None and stop.is_set():
                return
            title = f"{tag}-{n}"
            async with conn.transaction(force_rollback=n % 5 == 4):
                await conn.execute("INSERT INTO books (title, author) VALUES (%s, 'stack')", (title,))
            (ledger.rolled_back if n % 5 == 4 else ledger.committed).add(title)
            await asyncio.sleep(pause)


@dataclass
class Counted:
    ids: Counter[int] = field(default_factory=Counter)
    titles: Counter[str] = field(default_factory=Counter)
    live: asyncio.Event = field(default_factory=asyncio.Event)
    reconnects: int = 0


async def count_changes(base: str, counted: Counted) -> None:
    """rowcast.client.subscribe through nginx: it resumes from its cursor after any disconnect."""

    def status(state: str, cursor: str | None) -> None:
        if state == "live":
            counted.live.set()
        elif state == "reconnecting":
            counted.reconnects += 1

    async for change in subscribe(base, "books", on_status=status, max_backoff=0.5):
        if change.op == "insert" and change.row is not None:
            counted.ids[change.id] += 1
            counted.titles[str(change.row["title"])] += 1


@pytest.fixture
async def clients(stack: Stack) -> AsyncIterator[list[Counted]]:
    counted = [Counted() for _ in range(6)]
    tasks = [asyncio.create_task(count_changes(stack.base, c)) for c in counted]
    async with asyncio.timeout(20):
        await asyncio.gather(*(c.live.wait() for c in counted))
    yield counted
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def assert_exactly_once(counted: list[Counted], ledger: Ledger, tag: str) -> None:
    def complete() -> bool:
        return all(ledger.committed <= {t for t in c.titles if t.startswith(tag)} for c in counted)

    with suppress(TimeoutError):
        await wait_until(complete, 30, 0.1)
    for i, c in enumerate(counted):
        got = {t for t in c.titles if t.startswith(tag)}
        assert not ledger.committed - got, f"client {i} lost {sorted(ledger.committed - got)[:5]}"
        assert not got & ledger.rolled_back, (
            f"client {i} got rolled-back rows {sorted(got & ledger.rolled_back)}"
        )
        assert not got - ledger.committed, f"client {i} got phantom rows {sorted(got - ledger.committed)[:5]}"
        twice = [k for k, n in c.ids.items() if n > 1]
        assert not twice, f"client {i} got change ids {twice[:5]} more than once"


# -- the four ways in --------------------------------------------------------------------------


async def test_rest_and_page_through_nginx(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(stack.base + "/") as resp:
            assert resp.status == 200 and "text/html" in resp.headers["Content-Type"]
        body = {"title": "Through nginx", "author": "REST"}
        async with http.post(stack.base + "/api/books", json=body) as resp:
            assert resp.status == 201, await resp.text()
            created = await resp.json()
        async with http.get(f"{stack.base}/api/books/{created['id']}") as resp:
            assert resp.status == 200 and (await resp.json())["title"] == "Through nginx"


async def test_status_page_and_every_replica_through_nginx(stack: Stack) -> None:
    """/status comes from the api, /status.json from whichever replica: it lists both replicas."""
    async with aiohttp.ClientSession() as http:
        async with http.get(stack.base + "/status") as resp:
            assert resp.status == 200 and "status.js" in await resp.text()

        async def both_replicas() -> bool:
            async with http.get(stack.base + "/status.json") as resp:
                assert resp.status == 200, await resp.text()
                body = await resp.json()
            return len([n for n in body["notifiers"] if n["alive"] and n["listening"]]) == 2

        await wait_until(both_replicas, timeout=20, interval=0.5)


async def test_websocket_upgrade_through_nginx(stack: Stack, db_url: str) -> None:
    async with ws_connect(stack.base) as client:
        assert (await client.subscribe())["type"] == "subscribed"
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("INSERT INTO books (title, author) VALUES ('ws', 'nginx')")
        change = await client.until(lambda f: f["type"] == "change", timeout=5)
    assert change["row"]["title"] == "ws"


async def test_sse_is_unbuffered_through_nginx(stack: Stack, db_url: str) -> None:
    """nginx must pass each event on at once: the first within 1 s, a change within 1 s of commit."""
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        async with http.get(stack.base + "/sse?table=books", headers={"Accept": "text/event-stream"}) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
            async with asyncio.timeout(1):
                while not (await resp.content.readline()).startswith(b"event:"):
                    pass
            assert time.monotonic() - started < 1
            with psycopg.connect(db_url, autocommit=True) as conn:
                committed = time.monotonic()
                conn.execute("INSERT INTO books (title, author) VALUES ('sse', 'nginx')")
            async with asyncio.timeout(1):
                while b'"sse"' not in (line := await resp.content.readline()):
                    assert line, "stream ended"
            assert time.monotonic() - committed < 1


async def test_long_poll_through_nginx(stack: Stack, db_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(stack.base + "/changes?table=books&wait=0") as resp:
            assert resp.status == 200, await resp.text()
            cursor = (await resp.json())["cursor"]

        async def insert_later() -> None:
            await asyncio.sleep(0.5)
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
                await conn.execute("INSERT INTO books (title, author) VALUES ('poll', 'nginx')")

        writer = asyncio.create_task(insert_later())
        async with http.get(
            stack.base + "/changes", params={"table": "books", "cursor": cursor, "wait": "10"}
        ) as r:
            assert r.status == 200, await r.text()
            answer = await r.json()
        await writer
    assert [c["row"]["title"] for c in answer["changes"]] == ["poll"]


# -- failures under load -----------------------------------------------------------------------


@pytest.mark.timeout(180)
async def test_sigkilled_replica_clients_resume_through_nginx_and_miss_nothing(
    stack: Stack, clients: list[Counted], db_url: str
) -> None:
    ledger = Ledger()
    writer = asyncio.create_task(write(db_url, ledger, "kill", 300))
    await asyncio.sleep(1)
    port, victim = sorted(stack.replicas().items())[0]
    victim.send_signal(signal.SIGKILL)
    await stack.wait_replica_back(port, victim.pid)
    await writer
    await assert_exactly_once(clients, ledger, "kill-")
    assert sum(c.reconnects for c in clients) >= 1, "no client was on the killed replica"


@pytest.mark.timeout(240)
async def test_rolling_restart_of_every_replica_loses_nothing(
    stack: Stack, clients: list[Counted], db_url: str
) -> None:
    ledger = Ledger()
    stop = asyncio.Event()
    writer = asyncio.create_task(write(db_url, ledger, "roll", 100_000, pause=0.02, stop=stop))
    try:
        for port, replica in sorted(stack.replicas().items()):
            await asyncio.sleep(0.5)
            replica.send_signal(signal.SIGTERM)
            await stack.wait_replica_back(port, replica.pid)
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await writer
    assert len(ledger.committed) > 20, "the writer barely ran during the restarts"
    await assert_exactly_once(clients, ledger, "roll-")
    assert sum(c.reconnects for c in clients) >= len(clients), "every client should have moved once"


@dataclass
class Socket:
    """A raw WebSocket client whose reader never times out (a cancelled read would close it)."""

    ws: aiohttp.ClientWebSocketResponse
    frames: list[dict[str, object]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(json.loads(msg.data))
        self.closed.set()

    def got(self, title: str) -> bool:
        return any(f.get("type") == "change" and f["row"]["title"] == title for f in self.frames)  # type: ignore[index]


@pytest.mark.timeout(120)
async def test_sigterm_drains_a_replica_its_clients_get_1001_and_move(stack: Stack, db_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        sockets = []
        for _ in range(8):
            ws = await http.ws_connect(stack.base.replace("http", "ws", 1) + "/ws")
            await ws.send_str(json.dumps({"type": "subscribe", "ref": "s", "table": "books"}))
            sockets.append(Socket(ws))
        readers = [asyncio.create_task(s.read()) for s in sockets]
        await wait_until(lambda: all(any(f["type"] == "subscribed" for f in s.frames) for s in sockets), 10)
        port, replica = sorted(stack.replicas().items())[0]
        started = time.monotonic()
        replica.send_signal(signal.SIGTERM)
        await asyncio.to_thread(replica.wait, 15)
        assert time.monotonic() - started < 10, "the replica took too long to drain"
        await asyncio.sleep(0.5)
        codes = [s.ws.close_code for s in sockets]
        # Those on the drained replica were told to go elsewhere (1001); the others were left alone.
        assert 1001 in codes and set(codes) <= {1001, None}, codes
        # New clients land on the other replica while this one is down, and the ones left open
        # there still get changes.
        async with ws_connect(stack.base) as client:
            assert (await client.subscribe())["type"] == "subscribed"
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("INSERT INTO books (title, author) VALUES ('after drain', 'nginx')")
        still_open = [s for s in sockets if s.ws.close_code is None]
        await wait_until(lambda: all(s.got("after drain") for s in still_open), 5)
        for s in sockets:
            await s.ws.close()
        await asyncio.gather(*readers)
        await stack.wait_replica_back(port, replica.pid)


# -- start and stop ----------------------------------------------------------------------------


async def test_ctrl_c_stops_nginx_replicas_and_api_with_status_0(stack: Stack) -> None:
    children = psutil.Process(stack.proc.pid).children(recursive=True)
    names = " ".join(" ".join(c.cmdline()) for c in children)
    assert "nginx" in names and names.count("notifier") >= 2 and " api " in f"{names} "
    assert "(nginx -> api + 2 notifier replicas)" in stack.output()
    stack.proc.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(stack.proc.wait, 60) == 0, stack.output()
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert "rowcast stack stopped" in stack.output()


@pytest.mark.timeout(180)
async def test_embedded_postgres_and_token_auth_by_default(pg_tmp: Path, tmp_path: Path) -> None:
    """No DATABASE_URL: the embedded Postgres; no ROWCAST_JWT_SECRET: one made for this run, in a
    file the banner names, with the `rowcast token` line to mint a token from it."""
    running = start_stack({"ROWCAST_DATA_DIR": str(pg_tmp / "data")}, tmp_path / "stack.log")
    try:
        (line,) = [x for x in running.output().splitlines() if x.startswith("auth: token")]
        secret_file = Path(line.split("$(cat ", 1)[1].split(")", 1)[0])
        assert secret_file.stat().st_mode & 0o777 == 0o600
        secret = secret_file.read_text()
        assert secret not in running.output(), "the secret must never be printed"
        env = {**os.environ, "ROWCAST_JWT_SECRET": secret}
        minted = subprocess.run(
            [ROWCAST, "token", "--sub", "you", "--write", "books"], env=env, capture_output=True, text=True
        )
        assert minted.returncode == 0, minted.stderr
        token = minted.stdout.strip().splitlines()[-1]
        async with aiohttp.ClientSession() as http:
            async with http.get(running.base + "/api/books") as resp:
                assert resp.status == 401
            auth = {"Authorization": f"Bearer {token}"}
            async with http.get(running.base + "/api/books", headers=auth) as resp:
                assert resp.status == 200, await resp.text()
        running.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(running.proc.wait, 60) == 0, running.output()
        assert "rowcast stack stopped; embedded Postgres stopped" in running.output()
        assert not secret_file.exists(), "the run's secret goes with the run"
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
        for proc in psutil.process_iter(["name", "cmdline"]):
            if proc.info["name"] == "postgres" and str(pg_tmp) in " ".join(proc.info["cmdline"] or []):
                proc.kill()


# -- the reliability oracle through nginx -----------------------------------------------------


@pytest.mark.timeout(300)
async def test_rolling_restart_judged_by_the_reliability_oracle(stack: Stack, db_url: str) -> None:
    """The reliability suite's writers (rollbacks, savepoints, key moves, bursts on three tables)
    and its Python clients, through nginx, while every replica restarts in turn; its oracle then
    checks every feed against the change log: zero lost, zero phantom, per-row order, and each
    materialised table equal to Postgres's."""
    from tests.reliability.clients import Feed, PyClient
    from tests.reliability.model import ODD_COLUMNS, T_DDL, View
    from tests.reliability.oracle import Findings, caught_up, check_feed, check_ledger, read_truth
    from tests.reliability.workload import Ledger as OracleLedger
    from tests.reliability.workload import Writer, WriterProfile

    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        for statement in (*T_DDL, *ODD_COLUMNS):
            await conn.execute(statement)  # type: ignore[arg-type]
    rng = random.Random(17)
    views = [View("books"), View("authors"), View("t"), View("t", {"n": {"lt": 50}}), View("books")]
    clients = [PyClient(f"py{i}", Feed(f"py{i}", v), None, random.Random(i)) for i, v in enumerate(views)]
    for client in clients:
        client.start(stack.base)
    await wait_until(lambda: all(c.connections for c in clients), 20)
    ledger, stop = OracleLedger(), asyncio.Event()
    writers = [Writer(i, db_url, random.Random(rng.random()), ledger, WriterProfile()) for i in range(2)]
    writing = [asyncio.create_task(w.run(stop)) for w in writers]
    try:
        for port, replica in sorted(stack.replicas().items()):
            await asyncio.sleep(1)
            replica.send_signal(signal.SIGTERM)
            await stack.wait_replica_back(port, replica.pid)
        await asyncio.sleep(1)
    finally:
        stop.set()
        await asyncio.gather(*writing)
    truth = await read_truth(db_url)
    with suppress(TimeoutError):
        await wait_until(lambda: all(caught_up(f, truth) for c in clients for f in c.feeds), 30, 0.1)
    findings = Findings()
    for client in clients:
        if client.failure is not None:
            findings.add("client stopped with an error", repr(client.failure))
        for feed in client.feeds:
            check_feed(feed, truth, findings)
        await client.stop()
    check_ledger(ledger, truth, findings, set())
    assert not findings, findings.render()
    assert len(ledger.committed) > 20, "the writers barely ran during the restarts"
    assert all(c.connections >= 2 for c in clients), "every client should have moved at least once"


async def test_a_sigkilled_stack_leaves_no_server_or_nginx_behind(stack: Stack) -> None:
    """SIGKILL gives the stack no chance to stop anything: its children go by parent-death signal."""
    children = psutil.Process(stack.proc.pid).children(recursive=True)
    assert len(children) >= 4
    stack.proc.kill()
    stack.proc.wait()
    _, alive = await asyncio.to_thread(psutil.wait_procs, children, 30)
    assert not alive, [" ".join(p.cmdline()) for p in alive]
