"""A load-generator process: many WebSocket clients, measured latency, driven over stdin/stdout.

Started by the benchmarks (`bench.common.Loadgen`), one JSON command per stdin line, one JSON
reply per stdout line. Protocols: `rowcast` (subscribe to the table), `raw` (the aiohttp floor:
every text frame is a row) and `socketio` (Engine.IO v4 / Socket.IO v5 over a raw WebSocket,
bench/eio.py: answer pings, count `42["change",row]` events). Clients find the commit stamp (`"sent":<unix time>`, the writer's
`time.time()` just before its INSERT) in each change frame by string search, so a client costs
little more than aiohttp's own frame reading.

Commands: `window` (t0, t1: count changes stamped in [t0, t1)), `count`, `report`, `quit`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp

from bench import eio
from bench.common import LATENCY_BUCKET, raise_nofile

STAMP = '"sent":'


class Stats:
    def __init__(self) -> None:
        self.t0 = float("inf")
        self.t1 = float("inf")
        self.reset()
        self.closed: Counter[str] = Counter()

    def reset(self) -> None:
        self.other = 0  # non-change frames (checkpoints, ...)
        self.received = 0
        self.latencies: list[float] = []
        self.first = 0.0
        self.last = 0.0


async def client(
    http: aiohttp.ClientSession,
    url: str,
    protocol: str,
    table: str,
    stats: Stats,
    gate: asyncio.Semaphore,
    ready: list[str],
    settled: Callable[[], None],
) -> None:
    try:
        async with gate:
            ws = await http.ws_connect(url, autoping=True, compress=0, max_msg_size=0)
            if protocol == "rowcast":
                ready.append(await subscribe(ws, table))
            elif protocol == "socketio":
                ready.append(await socketio_connect(ws))
            else:
                ready.append("")
    except (aiohttp.ClientError, ConnectionError, OSError, TimeoutError) as exc:
        stats.closed[f"connect: {type(exc).__name__}"] += 1
        return
    finally:
        settled()
    find = str.find
    now = time.time
    try:
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = msg.data
                i = find(data, STAMP)
                if i < 0:
                    if data == "2":  # Engine.IO ping (socketio); a rowcast frame is never "2"
                        await ws.send_str(eio.PONG)
                    stats.other += 1
                    continue
                t = now()
                sent = float(data[i + 7 : find(data, "}", i)])
                if stats.t0 <= sent < stats.t1:
                    stats.received += 1
                    stats.latencies.append(t - sent)
                    if not stats.first:
                        stats.first = t
                    stats.last = t
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                stats.closed[f"{ws.close_code}"] += 1
                return
    finally:
        await ws.close()


async def subscribe(ws: aiohttp.ClientWebSocketResponse, table: str) -> str:
    """rowcast: subscribe to the whole table; returns the `subscribed` frame's cursor."""
    await ws.send_str(json.dumps({"type": "subscribe", "ref": "b", "table": table}))
    while True:
        msg = await ws.receive(timeout=60)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"closed while subscribing: {msg.type} {msg.extra}")
        frame = json.loads(msg.data)
        if frame.get("type") == "subscribed":
            return str(frame["cursor"])
        if frame.get("type") in ("error", "resync_required"):
            raise ConnectionError(str(frame))


async def socketio_connect(ws: aiohttp.ClientWebSocketResponse) -> str:
    """socketio: wait for the open packet, join "/", wait for the ack; returns the Socket.IO sid."""
    while True:
        msg = await ws.receive(timeout=60)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"closed while connecting: {msg.type} {msg.extra}")
        what = eio.kind(msg.data)
        if what == eio.OPEN:
            await ws.send_str(eio.CONNECT)
        elif what == eio.PING:
            await ws.send_str(eio.PONG)
        elif what == eio.CONNECTED:
            return str(eio.data(msg.data)["sid"])
        elif what in (eio.REFUSED, eio.CLOSE):
            raise ConnectionError(msg.data)


async def commands(stats: Stats, tasks: list[asyncio.Task[None]], ready: list[str]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"connected": len(ready), "closed": dict(stats.closed), "cursor": ready[0] if ready else None})
    while line := await reader.readline():
        cmd = json.loads(line)
        kind = cmd["cmd"]
        if kind == "window":
            stats.reset()
            stats.t0, stats.t1 = float(cmd["t0"]), float(cmd["t1"])
            reply({"ok": True})
        elif kind == "count":
            reply({"received": stats.received, "closed": sum(stats.closed.values())})
        elif kind == "report":
            hist = Counter(int(x / LATENCY_BUCKET) for x in stats.latencies)
            reply(
                {
                    "received": stats.received,
                    "hist": hist,
                    "max": max(stats.latencies, default=None),
                    "first": stats.first,
                    "last": stats.last,
                    "closed": dict(stats.closed),
                    "other": stats.other,
                }
            )
            stats.t0 = stats.t1 = float("inf")
            stats.reset()
        elif kind == "quit":
            break
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    reply({"ok": True})


async def main_async(args: argparse.Namespace) -> None:
    stats = Stats()
    urls = args.urls.split(",")
    ready: list[str] = []
    gate = asyncio.Semaphore(100)  # concurrent handshakes: the server's accept backlog is finite
    all_settled = asyncio.Event()
    pending = args.clients

    def settled() -> None:
        nonlocal pending
        pending -= 1
        if pending == 0:
            all_settled.set()

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        tasks = [
            asyncio.create_task(
                client(http, urls[i % len(urls)], args.protocol, args.table, stats, gate, ready, settled)
            )
            for i in range(args.clients)
        ]
        # Ready when every client has subscribed (or failed).
        async with asyncio.timeout(args.connect_timeout):
            await all_settled.wait()
        await commands(stats, tasks, ready)


def main() -> None:
    parser = argparse.ArgumentParser(description="WebSocket load generator for rowcast benchmarks")
    parser.add_argument("--urls", required=True, help="comma-separated ws:// URLs; clients spread over them")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--protocol", choices=["rowcast", "raw", "socketio"], default="rowcast")
    parser.add_argument("--table", default="bench_fanout")
    parser.add_argument("--connect-timeout", type=float, default=170.0)
    args = parser.parse_args()
    raise_nofile()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
