"""Real `rowcast notifier` processes: start, SIGKILL, restart, and watch their memory and sockets."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import psycopg

from tests.servers import free_port, wait_healthy

SECRET = "reliability-suite-secret-0123456789abcdef"
_METRIC = re.compile(r'^(rowcast_[a-z_]+)(?:\{transport="(\w+)"\})? ([0-9.e+-]+)$', re.MULTILINE)


@dataclass
class Sample:
    at: float
    rss: int
    fds: int


@dataclass
class Replica:
    """One notifier process on a fixed port (kept across restarts, so clients can come back)."""

    index: int
    url: str
    log_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    incarnation: int = 0
    kills: int = 0
    samples: list[Sample] = field(default_factory=list)  # of the current incarnation

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"notifier-{self.index}-{self.incarnation}.log"

    def start(self) -> None:
        self.incarnation += 1
        self.samples = []
        # Output goes to a file: a pipe nobody reads would stall a chatty process mid-run.
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "rowcast.cli",
                    "notifier",
                    "--port",
                    str(self.port),
                    "--database-url",
                    self.url,
                ],
                # One process per replica: its memory and sockets are what `sample` watches, and a
                # SIGKILL must free the port for the restart on the same port.
                env={**os.environ, "ROWCAST_WORKERS": "1", **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL: no goodbye to clients, no clean-up; Postgres sees its sockets reset."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def healthy(self, timeout: float = 30.0) -> None:
        try:
            await wait_healthy(self.base, timeout)
        except TimeoutError:
            raise AssertionError(
                f"notifier {self.index} not healthy in {timeout}s:\n{self.log_tail()}"
            ) from None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def sample(self) -> Sample | None:
        if not self.alive:
            return None
        assert self.proc is not None
        try:
            p = psutil.Process(self.proc.pid)
            s = Sample(time.monotonic(), p.memory_info().rss, p.num_fds())
        except psutil.Error:
            return None
        self.samples.append(s)
        return s

    def pg_ports(self, pg_port: int) -> set[int]:
        """Local ports of this process's connections to Postgres (to find them in pg_stat_activity)."""
        assert self.proc is not None
        conns = psutil.Process(self.proc.pid).net_connections(kind="tcp")
        return {c.laddr.port for c in conns if c.raddr and c.raddr.port == pg_port}

    async def metrics(self) -> dict[str, float]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.base}/metrics") as resp:
            text = await resp.text()
        out: dict[str, float] = {}
        for name, transport, value in _METRIC.findall(text):
            out[f"{name}:{transport}" if transport else name] = float(value)
        return out


async def pg_connections(url: str, replica: Replica, pg_port: int) -> list[tuple[Any, ...]]:
    """This replica's backends in pg_stat_activity: (application_name, state)."""
    ports = list(replica.pg_ports(pg_port))
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT application_name, state FROM pg_stat_activity WHERE client_port = ANY(%s)", (ports,)
        )
        return await cur.fetchall()


async def terminate_listeners(url: str, replica: Replica | None, pg_port: int) -> int:
    """pg_terminate_backend the LISTEN connection of one replica (or of all)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        query = (
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'rowcast-listener' AND datname = current_database()"
        )
        if replica is None:
            row = await (await conn.execute(query)).fetchone()
        else:
            ports = list(replica.pg_ports(pg_port)) if replica.alive else []
            row = await (await conn.execute(query + " AND client_port = ANY(%s)", (ports,))).fetchone()
    return int(row[0]) if row else 0


async def queue_usage(url: str) -> float:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (await conn.execute("SELECT pg_notification_queue_usage()")).fetchone()
    return float(row[0]) if row else 0.0


async def wait_all_healthy(replicas: list[Replica], timeout: float = 30.0) -> None:
    await asyncio.gather(*(r.healthy(timeout) for r in replicas))
