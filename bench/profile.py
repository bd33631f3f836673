"""Profile the notifier's hot path with py-spy under the fan-out load (or during a replay).

    python -m bench.profile                  # fan-out: 1,000 clients, 100 changes/s, 15 s sampled
    python -m bench.profile --load replay    # one client replaying 200,000 changes
    python -m bench.profile --quick

py-spy (the `bench` extra) attaches to the running `rowcast notifier` process from outside, so
the server runs unmodified. Prints the top frames by own time and by inclusive time; the raw
collapsed stacks go to bench/results/profile-<load>.txt (feed them to flamegraph.pl or
speedscope for a picture).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench import common, fanout, replay


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]' (or pip install py-spy)")
    return found


def record(pid: int, seconds: float, out: Path, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    argv = [py_spy(), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", str(args.sample_rate)]
    argv += ["-f", "raw", "-o", str(out)]
    if not args.lines:
        argv.append("--nolineno")
    if args.native:
        argv.append("--native")  # C frames too: shows e.g. the garbage collector
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def top(collapsed: Path, n: int) -> dict[str, Any]:
    """Own and inclusive sample shares per frame, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(frame, 100 * c / max(total, 1)) for frame, c in counter.most_common(n)]

    return {"samples": total, "own": share(own), "inclusive": share(inclusive)}


async def fanout_load(db: common.Database, server: common.Server, args: argparse.Namespace, out: Path) -> str:
    writer = fanout.Writer(db.url)
    await writer.open()
    try:
        async with fanout.Clients([server.ws_url], args.clients, "rowcast", args.client_procs) as clients:
            opts = fanout.Options(args.seconds + 2, 1.0, 5.0, args.client_procs)
            measuring = asyncio.create_task(fanout.measure(clients, writer, [server], db, args.rate, opts))
            await asyncio.sleep(1.5)
            spy = record(server.pid, args.seconds, out, args)
            r = await measuring
            await asyncio.to_thread(spy.wait)
    finally:
        await writer.close()
    return (
        f"{args.clients:,} clients, {args.rate:g} changes/s: delivered {r['msgs_per_s']:,.0f} msg/s, "
        f"p50 {common.ms(r['p50'])} ms, p99 {common.ms(r['p99'])} ms, server CPU {r['cpu']['server']}%"
    )


async def replay_load(db: common.Database, server: common.Server, args: argparse.Namespace, out: Path) -> str:
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
        cursor = await replay.subscribe(ws)
    for done in range(0, args.changes, replay.BATCH):
        db.execute(
            f"INSERT INTO {replay.TABLE} (pad, sent) SELECT repeat('x', 100), 0 FROM generate_series(1, %s)",
            (min(replay.BATCH, args.changes - done),),
        )
    await replay.drained(db)
    spy = record(server.pid, args.seconds, out, args)
    await asyncio.sleep(1.0)
    r = await replay.timed_replay(server.ws_url, cursor, args.changes, 300)
    await asyncio.to_thread(spy.wait)
    return f"replayed {r['events']:,} changes at {r['events'] / r['seconds']:,.0f}/s"


async def run(args: argparse.Namespace) -> None:
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    out = common.RESULTS / f"{args.name}.txt"
    with common.database() as db:
        fanout.prepare(db)
        fanout.prepare(db, replay.TABLE)
        info = common.machine(db.url)
        server = common.notifier(db)
        with common.running(server):
            load = fanout_load if args.load == "fanout" else replay_load
            what = await load(db, server, args, out)
    found = top(out, args.top)
    info["loadavg_after"] = common.loadavg()
    title = f"py-spy profile of the notifier, {args.load}: {what}; {found['samples']} samples"
    text = common.table(
        f"{title} — own time (loadavg before {info['loadavg_before']}, after {info['loadavg_after']})",
        ["frame", "own %"],
        [[f, f"{p:.1f}"] for f, p in found["own"]],
    )
    text += "\n" + common.table(
        f"{title} — inclusive time", ["frame", "incl %"], [[f, f"{p:.1f}"] for f, p in found["inclusive"]]
    )
    common.write_results(args.name, {"machine": info, "options": vars(args), "load": what, **found}, text)
    print(f"collapsed stacks: {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--load", choices=["fanout", "replay"], default="fanout")
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rate", type=float, default=100.0, help="changes/s for the fan-out load")
    p.add_argument("--changes", type=int, default=200_000, help="changes for the replay load")
    p.add_argument("--seconds", type=float, help="seconds sampled (default 15)")
    p.add_argument("--sample-rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--lines", action="store_true", help="keep line numbers (one row per line)")
    p.add_argument("--native", action="store_true", help="sample C frames too (py-spy --native)")
    p.add_argument("--name")
    args = p.parse_args()
    args.seconds = args.seconds or (4.0 if args.quick else 15.0)
    if args.quick:
        args.clients, args.changes = min(args.clients, 200), min(args.changes, 20_000)
    args.name = args.name or f"profile-{args.load}" + ("-quick" if args.quick else "")
    common.raise_nofile()
    common.handle_sigterm()
    started = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))
    print(f"done in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
