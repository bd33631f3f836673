"""Server memory per idle WebSocket client: RSS before and after connecting N subscribed clients.

    python -m bench.memory            # 1,000 and 10,000 clients (notifier, and the bare baseline)
    python -m bench.memory --quick    # 100 and 1,000 clients

Each count gets a fresh server process. Clients connect from load-generator processes,
subscribe to one table, and then stay idle (the notifier still sends them idle checkpoints).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from typing import Any

from bench import common, fanout
from bench.common import num

TARGET = 15 * 1024  # bytes per idle subscribed client at 10,000 clients (issue 19)


async def measure(
    server: common.Server, protocol: str, count: int, procs: int, settle: float
) -> dict[str, Any]:
    with common.running(server):
        await asyncio.sleep(settle)
        before = server.rss()
        async with fanout.Clients([server.ws_url], count, protocol, procs) as clients:
            await asyncio.sleep(settle)
            after = server.rss()
            connected = clients.connected
            seconds = clients.connect_seconds
    per = (after - before) / max(connected, 1)
    return {
        "clients": connected,
        "rss_before": before,
        "rss_after": after,
        "per_client": per,
        "connect_seconds": seconds,
    }


async def run(args: argparse.Namespace) -> None:
    results: list[dict[str, Any]] = []
    with common.database() as db:
        fanout.prepare(db)
        info = common.machine(db.url)
        attribution = ""
        if args.attribute:
            attribution, data = await attribute(db, args.attribute, args.client_procs, args.settle)
            info["tracemalloc"] = data
        kinds = [("notifier", "rowcast")] + ([] if args.no_baseline else [("baseline", "raw")])
        for kind, protocol in kinds:
            for count in args.clients:
                server = common.notifier(db) if kind == "notifier" else common.baseline(db)
                procs = 1 if count <= 1000 else args.client_procs
                r = await measure(server, protocol, count, procs, args.settle)
                r["server"] = kind
                results.append(r)
                print("  " + " | ".join(row(r)), flush=True)
    info["loadavg_after"] = common.loadavg()
    text = common.table(
        f"Server RSS per idle subscribed WebSocket client (loadavg before {info['loadavg_before']}, "
        f"after {info['loadavg_after']})",
        HEADERS,
        [row(r) for r in results],
    )
    lines = ["", "Targets:"]
    for r in results:
        if r["server"] == "notifier":
            lines.append(
                f"- ≤ {TARGET // 1024} KB per client at {r['clients']:,} clients: "
                f"{r['per_client'] / 1024:.1f} KB: {common.verdict(r['per_client'] <= TARGET)}"
            )
        elif r["server"] == "baseline":
            lines.append(
                f"- for scale, a bare aiohttp WebSocket server at {r['clients']:,} clients: "
                f"{r['per_client'] / 1024:.1f} KB per client"
            )
    text += "\n".join(lines) + "\n"
    print("\n".join(lines))
    if args.attribute:
        text += attribution
    common.write_results(args.name, {"machine": info, "options": vars(args), "results": results}, text)


async def attribute(db: common.Database, count: int, procs: int, settle: float) -> tuple[str, dict[str, Any]]:
    """Which source lines hold the memory of `count` idle clients (the notifier under tracemalloc)."""
    report = db.tmp / "tracemalloc.json"
    argv = [sys.executable, "-m", "bench.trace_server", "--database-url", db.url, "--report", str(report)]
    server = common.Server("notifier-traced", argv, {}, db.tmp / "notifier-traced.log")
    with common.running(server):
        await asyncio.sleep(settle)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGUSR2)
        await asyncio.sleep(0.5)
        async with fanout.Clients([server.ws_url], count, "rowcast", procs) as clients:
            await asyncio.sleep(settle)
            server.proc.send_signal(signal.SIGUSR1)
            async with asyncio.timeout(60):
                while not report.exists():  # noqa: ASYNC110 -- another process writes it
                    await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)
            connected = clients.connected
    data = json.loads(report.read_text())
    rows = [
        [" <- ".join(r["where"]), num(r["bytes"] / connected), num(r["count"] / connected, 2)]
        for r in data["top"][:20]
    ]
    text = common.table(
        f"tracemalloc: Python allocations per idle client at {connected:,} clients "
        f"({data['total'] / connected:,.0f} B per client traced in all; RSS also holds the kernel-side "
        "and allocator overhead)",
        ["allocated at", "bytes/client", "blocks/client"],
        rows,
    )
    return text, data


HEADERS = ["server", "clients", "RSS before MiB", "RSS after MiB", "KB per client", "connect s"]


def row(r: dict[str, Any]) -> list[str]:
    return [
        r["server"],
        num(r["clients"]),
        num(r["rss_before"] / 2**20, 1),
        num(r["rss_after"] / 2**20, 1),
        num(r["per_client"] / 1024, 1),
        num(r["connect_seconds"], 1),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--clients", type=int, nargs="+", help="client counts (default 1000 10000)")
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument("--settle", type=float, default=3.0, help="seconds to wait before each RSS reading")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument(
        "--attribute", type=int, metavar="N", help="also trace N clients' allocations by source line"
    )
    p.add_argument("--name")
    args = p.parse_args()
    args.clients = args.clients or ([100, 1000] if args.quick else [1000, 10000])
    args.name = args.name or ("memory-quick" if args.quick else "memory")
    if args.quick:
        args.settle = min(args.settle, 1.0)
    common.raise_nofile()
    common.handle_sigterm()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
