"""Which Socket.IO client should the load generators use? Their own CPU limits the benchmark.

    pip install python-socketio        # not in the bench extra: only this comparison needs it
    python -m bench.socketio_clients --clients 500 --rate 100 --seconds 6

Runs the relay (bench/socketio/relay.js) once and measures, on the same load, the CPU of one
load-generator process per received message for (a) `bench.loadgen --protocol socketio` (a raw
aiohttp WebSocket speaking Engine.IO v4 / Socket.IO v5, bench/eio.py, the stamp found by string
search) and (b) python-socketio's `AsyncClient` (parses every event's JSON, a task per event
handler). The cheaper one is what bench.fanout uses; the measured numbers are in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from typing import Any

import aiohttp

from bench import common, fanout, loadgen
from bench.common import Child


async def sio_client(
    http: aiohttp.ClientSession, url: str, stats: loadgen.Stats, ready: list[str], holder: list[Any]
) -> None:
    """One python-socketio client that records latency like bench.loadgen does."""
    import socketio  # type: ignore[import-not-found]

    sio = socketio.AsyncClient(reconnection=False, http_session=http)
    holder.append(sio)

    @sio.on("change")  # type: ignore[untyped-decorator]
    async def change(row: dict[str, Any]) -> None:
        t = time.time()
        sent = float(row["sent"])
        if stats.t0 <= sent < stats.t1:
            stats.received += 1
            stats.latencies.append(t - sent)
            stats.first = stats.first or t
            stats.last = t

    try:
        await sio.connect(url, transports=["websocket"], wait_timeout=60)
        ready.append(sio.sid or "")
    except Exception as exc:  # python-socketio wraps every failure in its own types
        stats.closed[f"connect: {type(exc).__name__}"] += 1


async def child(url: str, clients: int) -> None:
    """The python-socketio load generator: same stdin/stdout commands as bench.loadgen."""
    stats = loadgen.Stats()
    ready: list[str] = []
    holder: list[Any] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        gate = asyncio.Semaphore(100)

        async def one() -> None:
            async with gate:
                await sio_client(http, url, stats, ready, holder)

        await asyncio.gather(*(one() for _ in range(clients)))
        await loadgen.commands(stats, [], ready)
        await asyncio.gather(*(c.disconnect() for c in holder), return_exceptions=True)


class SioClients(fanout.Clients):
    """fanout.Clients with python-socketio load generators instead of bench.loadgen."""

    def __init__(self, base: str, count: int) -> None:
        self.count = count
        argv = [sys.executable, "-m", "bench.socketio_clients", "--child", base, "--clients", str(count)]
        self.gens = [Child(argv)]  # type: ignore[list-item]


async def compare(args: argparse.Namespace) -> None:
    opts = fanout.Options(args.seconds, 1.0, 5.0, 1)
    lines = []
    with common.database() as db:
        fanout.prepare(db)
        relay = common.socketio_relay(db, fanout.CHANNEL)
        writer = fanout.Writer(db.url)
        with fanout.row_notify(db), common.running(relay):
            await writer.open()
            try:
                for name in ("raw aiohttp + bench/eio.py", "python-socketio AsyncClient"):
                    if name.startswith("raw"):
                        clients = fanout.Clients([relay.ws_url], args.clients, "socketio", 1)
                    else:
                        clients = SioClients(relay.base, args.clients)
                    async with clients:
                        r = await fanout.measure(clients, writer, [relay], db, args.rate, opts)
                    per = r["loadgen_max"] / 100 / max(r["msgs_per_s"], 1) * 1e6
                    lines.append(
                        f"- {name}: {r['clients']} clients, {r['msgs_per_s']:,.0f} msg/s, loadgen CPU "
                        f"{r['loadgen_max']:.0f}% = {per:.1f} µs/msg, p99 {common.ms(r['p99'])} ms"
                    )
                    print(lines[-1], flush=True)
            finally:
                await writer.close()
    print(
        f"\n{args.clients} clients x {args.rate:g} changes/s, {args.seconds:g} s; loadavg {common.loadavg()}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--clients", type=int, default=500)
    p.add_argument("--rate", type=float, default=100)
    p.add_argument("--seconds", type=float, default=6)
    p.add_argument("--child", metavar="BASE_URL", help=argparse.SUPPRESS)
    args = p.parse_args()
    common.raise_nofile()
    common.handle_sigterm()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(child(args.child, args.clients) if args.child else compare(args))


if __name__ == "__main__":
    main()
