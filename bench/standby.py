"""Commit-to-client latency when the notifier reads from a hot standby (ROWCAST_READ_URL).

A primary and a streaming standby (`pg_basebackup -R`, tests/replica.py), one `rowcast notifier`
process per configuration: `primary` (DATABASE_URL only) and `standby` (the same, plus
ROWCAST_READ_URL = the standby). One WebSocket subscriber; one writer commits single-row inserts
on the primary at a fixed rate. Latency = the frame's arrival at the client minus the moment the
writer's COMMIT returned. Configurations alternate for `--rounds` rounds. Also counted: rows of
rowcast.changes fetched on the primary and on the standby during each run (pg_stat_user_tables),
i.e. whose disk and CPU the window reads used.

    python -m bench.standby [--commits 200] [--rate 20] [--rounds 2] [--postgres 18-embedded|15-debian]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from typing import Any

import aiohttp
import psycopg

from bench import common
from tests.pg import install_with_demo
from tests.replica import BIN_DIRS, missing, replica

_FETCHED = (
    "SELECT coalesce(sum(coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0)), 0) "
    "FROM pg_stat_user_tables WHERE schemaname = 'rowcast' AND relname = 'changes'"
)


def fetched(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return int(common.one(conn, _FETCHED))


async def run_once(base: str, primary: str, commits: int, rate: float, tag: str) -> dict[str, Any]:
    arrived: dict[str, float] = {}
    committed: dict[str, float] = {}
    commit_ms: list[float] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(base.replace("http", "ws", 1) + "/ws") as ws:
        await ws.send_str(json.dumps({"type": "subscribe", "ref": "s", "table": "books"}))
        while True:
            frame = json.loads((await ws.receive()).data)
            if frame.get("type") == "subscribed":
                break

        async def receive() -> None:
            async for msg in ws:
                frame = json.loads(msg.data)
                if frame.get("type") == "change":
                    title = frame["row"]["title"]
                    if title.startswith(tag):
                        arrived.setdefault(title, time.time())
                        if len(arrived) == commits:
                            return

        reader = asyncio.create_task(receive())
        async with await psycopg.AsyncConnection.connect(primary, autocommit=True) as conn:
            start = time.monotonic()
            for i in range(commits):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                title = f"{tag}{i}"
                sent = time.time()
                await conn.execute("INSERT INTO books (title) VALUES (%s)", (title,))
                committed[title] = time.time()
                commit_ms.append((committed[title] - sent) * 1000)
        try:
            async with asyncio.timeout(30):
                await reader
        except TimeoutError:
            reader.cancel()
    latencies = [arrived[t] - committed[t] for t in committed if t in arrived]
    return {
        "received": len(latencies),
        "p50": common.percentile(latencies, 50),
        "p99": common.percentile(latencies, 99),
        "max": max(latencies) if latencies else float("nan"),
        "commit_p50_ms": common.percentile(commit_ms, 50),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="commits per second")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--postgres", choices=sorted(BIN_DIRS), default="18-embedded")
    parser.add_argument("--name", default="standby")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 commits, one round")
    args = parser.parse_args(argv)
    if args.quick:
        args.commits, args.rounds, args.name = 20, 1, "standby-quick"
    bin_dir = BIN_DIRS[args.postgres]
    why = missing(bin_dir)
    if why:
        print(f"bench: no streaming replica: {why}", file=sys.stderr)
        return 1
    load_before = common.loadavg()
    rows: list[list[Any]] = []
    runs: list[dict[str, Any]] = []
    with replica(bin_dir) as pair:
        name = f"rowcast_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(pair.primary(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        install_with_demo(pair.primary(name))
        pair.wait_replayed()
        primary, standby = pair.primary(name), pair.standby(name)
        db = common.Database(primary, None, pair.root)  # type: ignore[arg-type]
        machine = common.machine(primary)
        configs = {"primary": {}, "standby": {"ROWCAST_READ_URL": standby}}
        for round_no in range(args.rounds):
            for config, env in configs.items():
                server = common.notifier(db, name=f"notifier-{config}", ROWCAST_POLL_INTERVAL="250ms", **env)
                with common.running(server):
                    time.sleep(1.0)  # warm the pools
                    before = fetched(primary), fetched(standby)
                    tag = f"{config}-{round_no}-"
                    result = asyncio.run(run_once(server.base, primary, args.commits, args.rate, tag))
                    time.sleep(0.5)
                    after = fetched(primary), fetched(standby)
                result.update(
                    config=config,
                    round=round_no + 1,
                    primary_rows=after[0] - before[0],
                    standby_rows=after[1] - before[1],
                    loadavg=common.loadavg(),
                )
                runs.append(result)
                rows.append(
                    [
                        f"{config} (round {round_no + 1})",
                        f"{result['received']}/{args.commits}",
                        common.ms(result["p50"]),
                        common.ms(result["p99"]),
                        common.ms(result["max"]),
                        f"{result['commit_p50_ms']:.1f}",
                        result["primary_rows"],
                        result["standby_rows"],
                        result["loadavg"],
                    ]
                )
        version = pair.version()
    title = (
        f"Commit on the primary to frame at the client, {args.commits} single-row commits at "
        f"{args.rate:g}/s, Postgres {version // 10000} ({args.postgres}), load avg before {load_before}"
    )
    text = common.table(
        title,
        [
            "reads from",
            "received",
            "p50 ms",
            "p99 ms",
            "max ms",
            "commit p50 ms",
            "log rows scanned on primary",
            "scanned on standby",
            "load avg after",
        ],
        rows,
    )
    common.write_results(
        args.name,
        {"machine": {**machine, "loadavg_before": load_before}, "args": vars(args), "runs": runs},
        text,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
