"""The paced writers of bench.fanout, in a process of their own, driven over stdin/stdout.

Why a process: the orchestrator polls load generators and reads CPU counters; if it also wrote,
its own scheduling hiccups would delay INSERTs and show up as latency of the server under test,
and its CPU could not be told apart. Here the writers have their own event loop and their CPU is
reported on its own (`writer` in the CPU column).

Each row carries `sent` = time.time() just before its INSERT (one machine, one clock), so a
client's latency includes the writer's durable commit; the commit latency is measured here
(time.time() after the INSERT returns minus `sent`) and reported as `commit p50/p99`.

Commands (one JSON line each): `run` (rate, start, t0, t1) -> written, rate, commit_p50/p99;
`quit`.

    python -m bench.writer --database-url URL [--connections 8] [--table bench_fanout]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import time
from typing import Any

import psycopg

from bench.common import percentile

PAD = "x" * 100


class Writer:
    """Paced single-row INSERT transactions from a few autocommit connections."""

    def __init__(self, url: str, connections: int, table: str) -> None:
        self.url = url
        self.n = connections
        self.insert = f"INSERT INTO {table} (pad, sent) VALUES (%s, %s)"
        self.conns: list[psycopg.AsyncConnection[Any]] = []

    async def open(self) -> None:
        self.conns = [
            await psycopg.AsyncConnection.connect(self.url, autocommit=True, application_name="bench-writer")
            for _ in range(self.n)
        ]

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()

    async def run(self, rate: float, start: float, t0: float, t1: float) -> dict[str, Any]:
        """Write at `rate` from `start` until `t1`; counts the rows stamped inside [t0, t1)."""
        slots = itertools.count()
        in_window = 0
        commits: list[float] = []

        async def worker(conn: psycopg.AsyncConnection[Any]) -> None:
            nonlocal in_window
            while True:
                slot = start + next(slots) / rate
                if slot >= t1:
                    return
                delay = slot - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent = time.time()
                if sent >= t1:
                    return
                await conn.execute(self.insert, (PAD, sent))
                if sent >= t0:
                    in_window += 1
                    commits.append(time.time() - sent)

        await asyncio.gather(*(worker(c) for c in self.conns))
        return {
            "written": in_window,
            "rate": in_window / (t1 - t0),
            "commit_p50": percentile(commits, 50),
            "commit_p99": percentile(commits, 99),
        }


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def serve(writer: Writer) -> None:
    """Answer commands from stdin until `quit` or EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    reply({"connections": writer.n})
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "run":
            reply(
                await writer.run(float(cmd["rate"]), float(cmd["start"]), float(cmd["t0"]), float(cmd["t1"]))
            )
        elif cmd["cmd"] == "quit":
            break
    reply({"ok": True})


async def main_async(args: argparse.Namespace) -> None:
    writer = Writer(args.database_url, args.connections, args.table)
    await writer.open()
    try:
        await serve(writer)
    finally:
        await writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--table", default="bench_fanout")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
