"""Shared benchmark helpers: embedded Postgres, server processes, load generators, tables, results."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg

from rowcast.embedded import EmbeddedPostgres, free_port

# ROWCAST_BENCH_RESULTS: somewhere else (the CI smoke run writes to a temp folder, not the checkout).
RESULTS = Path(os.environ.get("ROWCAST_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
HOST = "127.0.0.1"
LATENCY_BUCKET = 1e-4  # latency histograms count in 0.1 ms buckets


# -- the machine -----------------------------------------------------------------------------


def raise_nofile() -> int:
    """Raise the soft open-file limit to the hard one; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def handle_sigterm() -> None:
    """SIGTERM (a timeout, a CI runner) unwinds like Ctrl-C, so servers and temp data are cleaned up."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine(url: str | None = None) -> dict[str, Any]:
    """What the numbers were measured on (and how busy it was)."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_before": loadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    info.update(revision())
    if url is not None:
        with psycopg.connect(url) as conn:
            info["postgres"] = str(one(conn, "SHOW server_version"))
            info["synchronous_commit"] = str(one(conn, "SHOW synchronous_commit"))
            info["fsync"] = str(one(conn, "SHOW fsync"))
    return info


def revision() -> dict[str, Any]:
    """The code measured: git commit, and a digest of the server-side sources as they are on disk.

    The digest tells apart runs of the same commit with different uncommitted notifier/db changes.
    """
    before = before_python()
    root = Path(__file__).resolve().parent.parent if before is None else before.parent.parent.parent
    digest = hashlib.sha256()
    for path in sorted([*root.glob("notifier/*.py"), *root.glob("db/sql/*.sql")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    out: dict[str, Any] = {"sources_sha256": digest.hexdigest()[:12]}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "notifier", "db"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        out["commit"] = head.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")
    return out


def one(conn: psycopg.Connection[Any], sql: Any, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


# -- embedded Postgres -----------------------------------------------------------------------


@dataclass
class Database:
    url: str
    server: EmbeddedPostgres
    tmp: Path

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, walwriter, checkpointer...)."""
        try:
            pid = int((self.server.pgdata / "postmaster.pid").read_text().split()[0])
            proc = psutil.Process(pid)
            return [pid, *(c.pid for c in proc.children(recursive=True))]
        except (OSError, ValueError, psutil.Error):
            return []

    def execute(self, sql: Any, params: Any = None) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql, params)

    def scalar(self, sql: Any, params: Any = None) -> Any:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return one(conn, sql, params)


@contextlib.contextmanager
def database(extra_conf: str = "") -> Iterator[Database]:
    """A fresh embedded Postgres with rowcast's roles and schema; stopped and deleted on exit."""
    from rowcast.db import migrate, roles

    tmp = Path(tempfile.mkdtemp(prefix="rowcast-bench-"))
    tmp.chmod(0o755)  # as root the server runs as its own user, which must reach its data dir
    server = EmbeddedPostgres(tmp / "pg")
    try:
        server.start()
        if extra_conf:
            with (server.pgdata / "postgresql.conf").open("a") as conf:
                conf.write("\n# rowcast bench\n" + extra_conf + "\n")
            server.restart()
        url = server.url()
        before = before_python()
        if before is None:
            with psycopg.connect(url, autocommit=True) as conn:
                roles.install(conn)
            migrate.upgrade(url)
        else:  # the older version's own schema, by its own migrations
            # -P: the older checkout its .venv installs, not this one (the working directory).
            code = "import sys; from db import migrate; migrate.upgrade(sys.argv[1])"
            subprocess.run([str(before), "-P", "-c", code, url], check=True)
        yield Database(url, server, tmp)
    finally:
        server.destroy()
        shutil.rmtree(tmp, ignore_errors=True)


def set_wake_mode(url: str, mode: str) -> str | None:
    """Switch the database's wake-up mode; returns None, or why it is not available."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT rowcast.set_wake_mode(%s)", (mode,))
    except psycopg.Error as exc:
        if mode == "notify":
            return None  # no switch at all: everything is 'notify'
        return f"not available ({str(exc).strip().splitlines()[0][:80]})"
    return None


# -- server processes ------------------------------------------------------------------------


@dataclass
class Server:
    """A server process (the notifier, the aiohttp floor or the Socket.IO relay) on 127.0.0.1."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    ws_path: str = "/ws"
    # Printed once the whole server serves: a supervisor's first worker answers /healthz before
    # the others listen, and clients connected then would all land on that one.
    ready_line: str | None = None

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}{self.ws_path}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> Server:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*self.argv, "--port", str(self.port)],
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_healthy(timeout)
        return self

    def _wait_healthy(self, timeout: float) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=1) as resp:  # noqa: S310
                    if resp.status == 200 and self._printed_ready():
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not healthy after {timeout:.0f}s; see {self.log}")

    def _printed_ready(self) -> bool:
        return self.ready_line is None or self.ready_line.encode() in self.log.read_bytes()

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def before_python() -> Path | None:
    """ROWCAST_BENCH_BEFORE: a checkout of an older rowcast with its own .venv. Then the database
    gets that version's schema and `notifier` runs that version, under this harness: an A/B of
    two versions measured the same way (python -m bench.fanout --servers rowcast)."""
    folder = os.environ.get("ROWCAST_BENCH_BEFORE")
    if not folder:
        return None
    python = Path(folder) / ".venv" / "bin" / "python"
    if not python.is_file():
        raise SystemExit(f"bench: ROWCAST_BENCH_BEFORE={folder} has no .venv/bin/python")
    return python


def notifier(db: Database, name: str = "notifier", workers: int = 1, **env: str) -> Server:
    """`rowcast notifier`: one process unless `workers` says more (RSS and profiles read one pid)."""
    before = before_python()
    python = [str(before), "-P"] if before else [sys.executable]  # -P: the older checkout, not this one
    argv = [*python, "-m", "rowcast.cli", "notifier", "--auth", "open", "--database-url", db.url]
    base_env = {"ROWCAST_LOG_LEVEL": "WARNING", "ROWCAST_WORKERS": str(workers)}
    ready = "rowcast notifier on" if workers > 1 else None
    return Server(name, argv, {**base_env, **env}, db.tmp / f"{name}.log", ready_line=ready)


def baseline(db: Database, name: str = "baseline", channel: str = "rowcast") -> Server:
    argv = [sys.executable, "-m", "bench.baseline_server", "--database-url", db.url, "--channel", channel]
    return Server(name, argv, {}, db.tmp / f"{name}.log")


SOCKETIO = Path(__file__).resolve().parent / "socketio"


def npm_install(folder: Path = SOCKETIO) -> None:
    """`npm ci` (or `npm install` without a lock) once, so the relay's node_modules exist.

    Exits with one line saying what is missing when node or npm is not installed: the other
    servers need neither, so `--servers rowcast,floor` still runs.
    """
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise SystemExit(
                f"bench: the Socket.IO relay needs {tool} (Node.js 18+) on PATH; or --servers rowcast,floor"
            )
    if (folder / "node_modules" / "socket.io").is_dir() and (folder / "node_modules" / "pg").is_dir():
        return
    verb = "ci" if (folder / "package-lock.json").exists() else "install"
    print(f"bench: npm {verb} in {folder} (first use)", flush=True)
    done = subprocess.run(
        ["npm", verb, "--no-audit", "--no-fund"], cwd=folder, capture_output=True, text=True, check=False
    )
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
        raise SystemExit(f"bench: npm {verb} in {folder} failed: {tail[0]}")


def socketio_relay(db: Database, channel: str, name: str = "socketio") -> Server:
    """bench/socketio/relay.js under node: LISTEN `channel`, io.emit each payload to everyone.

    node-postgres does not read libpq's `passfile` parameter, so the URL goes without it and
    the password in PGPASSWORD (which node-postgres does read).
    """
    npm_install()
    url = db.url.split("?", 1)[0]
    argv = ["node", str(SOCKETIO / "relay.js"), "--database-url", url, "--channel", channel]
    env = {"PGPASSWORD": db.server.password()}
    return Server(name, argv, env, db.tmp / f"{name}.log", ws_path="/socket.io/?EIO=4&transport=websocket")


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[tuple[Server, ...]]:
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


# -- load generator processes ----------------------------------------------------------------


class Child:
    """A helper process (load generator, writer) driven by JSON lines: one command in, one reply out.

    Each helper is its own process so that its CPU is its own (measured apart from the
    orchestrator's) and so that it never shares an event loop with the thing that times it.
    """

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.proc: asyncio.subprocess.Process | None = None
        self.ready: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, seconds: float = 180.0) -> dict[str, Any]:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        self.ready = await self._reply(seconds)
        return self.ready

    async def ask(self, seconds: float = 60.0, **command: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        await self.proc.stdin.drain()
        return await self._reply(seconds)

    async def _reply(self, seconds: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        async with asyncio.timeout(seconds):
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.argv[2]} exited ({await self.proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            await self.ask(seconds=30, cmd="quit")
        try:
            async with asyncio.timeout(15):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class Loadgen(Child):
    """A `bench.loadgen` process holding WebSocket clients."""

    def __init__(self, urls: Sequence[str], clients: int, protocol: str, table: str) -> None:
        super().__init__(
            [
                sys.executable,
                "-m",
                "bench.loadgen",
                "--urls",
                ",".join(urls),
                "--clients",
                str(clients),
                "--protocol",
                protocol,
                "--table",
                table,
            ]
        )


def split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# -- CPU accounting --------------------------------------------------------------------------


class Cpu:
    """CPU time used by groups of processes over a window, as % of one core."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.start: dict[str, float] = {}
        self.t0 = 0.0

    @staticmethod
    def _seconds(pids: list[int]) -> float:
        total = 0.0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
        return total

    def begin(self) -> None:
        self.t0 = time.monotonic()
        self.start = {name: self._seconds(pids()) for name, pids in self.groups.items()}

    def end(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        return {
            name: round(100 * (self._seconds(pids()) - self.start[name]) / elapsed, 1)
            for name, pids in self.groups.items()
        }


# -- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def hist_percentile(hist: Counter[int], q: float) -> float:
    """Percentile (seconds) of a latency histogram of LATENCY_BUCKET-wide buckets."""
    total = sum(hist.values())
    if not total:
        return float("nan")
    need = q / 100 * total
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= need:
            return (bucket + 1) * LATENCY_BUCKET
    return (max(hist) + 1) * LATENCY_BUCKET


def ms(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "-"
    return f"{seconds * 1000:.1f}"


def num(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:,.{digits}f}"


# -- output ----------------------------------------------------------------------------------


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (readable in a terminal and pasteable into the README)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            + " |"
        )

    out = [f"### {title}", "", line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells[1:]]
    text = "\n".join(out) + "\n"
    print(text, flush=True)
    return text


def write_results(name: str, data: dict[str, Any], text: str) -> Path:
    """bench/results/<name>.json and <name>.md (the printed tables)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {**data, "loadavg_after": loadavg()}
    m = data.get("machine", {})
    if m:
        footer = (
            f"\nMeasured {m.get('date')} on {m.get('cores')} cores ({m.get('cpu')}), Python {m.get('python')}, "
            f"Postgres {m.get('postgres', '?')}; code {m.get('commit', '?')} "
            f"(notifier+db sources {m.get('sources_sha256')}); loadavg before {m.get('loadavg_before')}, "
            f"after {data['loadavg_after']}.\n"
        )
        print(footer)
        text += footer
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(text)
    print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return path


def write_png(name: str, draw: Callable[[Any], None]) -> Path | None:
    """bench/results/<name>.png via matplotlib, if it is installed (the `bench` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install -e '.[bench]')")
        return None
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    draw(ax)
    fig.tight_layout()
    path = RESULTS / f"{name}.png"
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"
