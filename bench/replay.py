"""Replay speed: change-log events per second served to one client resuming from an old cursor.

    python -m bench.replay            # 200,000 changes
    python -m bench.replay --quick    # 20,000 changes

A client subscribes and keeps the cursor from its `subscribed` frame, then leaves; the changes are
inserted (10,000-row transactions); once the notifier has drained the live notifications, a
client subscribes with the old cursor and is timed until every change has arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from typing import Any

import aiohttp

from bench import common
from bench.common import Cpu, num

TABLE = "bench_replay"
BATCH = 10_000
TARGET = 50_000  # events/s


async def subscribe(ws: aiohttp.ClientWebSocketResponse, cursor: str | None = None) -> str:
    frame: dict[str, Any] = {"type": "subscribe", "ref": "r", "table": TABLE}
    if cursor is not None:
        frame["cursor"] = cursor
    await ws.send_str(json.dumps(frame))
    async with asyncio.timeout(30):
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"socket closed: {msg.type} {msg.extra}")
            reply = json.loads(msg.data)
            if reply["type"] == "subscribed":
                return str(reply["cursor"])
            if reply["type"] in ("error", "resync_required"):
                raise RuntimeError(f"subscribe failed: {reply}")


async def drained(db: common.Database, settle: float = 1.0, limit: float = 300.0) -> None:
    """Wait until the NOTIFY queue is empty (the notifier has read the live notifications)."""
    async with asyncio.timeout(limit):
        # A database value has no event to await: poll it, under the deadline.
        while float(db.scalar("SELECT pg_notification_queue_usage()")) > 0:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    await asyncio.sleep(settle)


async def timed_replay(url: str, cursor: str, count: int, limit: float) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.ws_connect(url, compress=0, max_msg_size=0) as ws:
        started = time.monotonic()
        await subscribe(ws, cursor)
        subscribed = time.monotonic() - started
        got = 0
        first = 0.0
        async with asyncio.timeout(limit):
            while got < count:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"socket closed after {got} changes: {msg.type} {msg.extra}")
                if msg.data.startswith('{"type":"change"'):
                    got += 1
                    if got == 1:
                        first = time.monotonic() - started
        seconds = time.monotonic() - started
    return {"events": got, "seconds": seconds, "subscribed_s": subscribed, "first_s": first}


async def run(args: argparse.Namespace) -> None:
    with common.database() as db:
        db.execute(
            f"CREATE TABLE {TABLE} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "pad text NOT NULL, sent double precision NOT NULL)"
        )
        db.execute("SELECT rowcast.enable_capture(%s)", (TABLE,))
        info = common.machine(db.url)
        server = common.notifier(db)
        with common.running(server):
            async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
                cursor = await subscribe(ws)
            started = time.monotonic()
            for done in range(0, args.changes, BATCH):
                n = min(BATCH, args.changes - done)
                db.execute(
                    f"INSERT INTO {TABLE} (pad, sent) SELECT repeat('x', 100), 0 FROM generate_series(1, %s)",
                    (n,),
                )
            inserted = time.monotonic() - started
            await drained(db)
            cpu = Cpu({"server": lambda: [server.pid], "client": lambda: [os.getpid()], "postgres": db.pids})
            cpu.begin()
            r = await timed_replay(server.ws_url, cursor, args.changes, args.timeout)
            r["cpu"] = cpu.end()
    r["events_per_s"] = r["events"] / r["seconds"]
    r["insert_seconds"] = inserted
    info["loadavg_after"] = common.loadavg()
    text = common.table(
        f"Replay to one resuming client (loadavg before {info['loadavg_before']}, after {info['loadavg_after']})",
        ["changes", "subscribed after s", "first change s", "total s", "events/s", "CPU% server/client/pg"],
        [
            [
                num(r["events"]),
                num(r["subscribed_s"], 2),
                num(r["first_s"], 2),
                num(r["seconds"], 2),
                num(r["events_per_s"]),
                f"{r['cpu']['server']}/{r['cpu']['client']}/{r['cpu']['postgres']}",
            ]
        ],
    )
    line = (
        f"\nTarget: ≥ {TARGET:,} events/s: {r['events_per_s']:,.0f}/s: "
        f"{common.verdict(r['events_per_s'] >= TARGET)}\n"
    )
    print(line)
    common.write_results(args.name, {"machine": info, "options": vars(args), "result": r}, text + line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--changes", type=int, help="changes to replay (default 200000)")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--name")
    args = p.parse_args()
    args.changes = args.changes or (20_000 if args.quick else 200_000)
    args.name = args.name or ("replay-quick" if args.quick else "replay")
    common.handle_sigterm()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
