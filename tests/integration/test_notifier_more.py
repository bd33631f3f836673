"""Notifier behaviours beyond the basics: metrics, heartbeats, latest mode, paging, expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import psycopg
import pytest
from rowcast.notifier.app import create_app

from tests.servers import await_prunable, serve, settings_for, wait_healthy, ws_connect

AConn = psycopg.AsyncConnection[tuple[Any, ...]]


@pytest.fixture
async def notifier(db_url: str) -> AsyncIterator[str]:
    async with serve(create_app(settings_for(db_url, heartbeat=0.2))) as base:
        await wait_healthy(base)
        yield base


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_metrics_expose_connections_subscriptions_events_lag_and_queue_usage(
    notifier: str, aconn: AConn
) -> None:
    async with ws_connect(notifier) as client:
        await client.subscribe()
        await aconn.execute("INSERT INTO books (title) VALUES ('m1'), ('m2')")
        await client.until(lambda f: f["type"] == "change")
        await client.until(lambda f: f["type"] == "change")
        async with aiohttp.ClientSession() as http, http.get(f"{notifier}/metrics") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
    assert metric(text, 'rowcast_connections{transport="ws"}') == 1
    assert metric(text, "rowcast_subscriptions") == 1
    assert metric(text, "rowcast_events_in_total") >= 2
    assert metric(text, 'rowcast_messages_out_total{transport="ws"}') >= 3
    assert metric(text, "rowcast_event_lag_seconds_count") >= 1  # sampled: one event in eight
    assert metric(text, "rowcast_listening") == 1
    assert metric(text, "rowcast_pg_notification_queue_usage") == 0
    for name in ("rowcast_slow_consumer_drops_total", "rowcast_listener_reconnects_total"):
        assert metric(text, name) == 0


async def test_websocket_heartbeat_pings_and_sse_keepalive_comments(notifier: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(notifier.replace("http", "ws") + "/ws", autoping=False) as ws:
            msg = await asyncio.wait_for(ws.receive(), 3)
            assert msg.type == aiohttp.WSMsgType.PING
            await ws.pong(msg.data)
        async with http.get(f"{notifier}/sse", params={"table": "books"}) as resp:
            seen = b""
            async with asyncio.timeout(3):
                while b": ka" not in seen:
                    seen += await resp.content.readany()


async def test_latest_mode_coalesces_per_row_instead_of_dropping_a_slow_client(
    db_url: str, aconn: AConn
) -> None:
    settings = settings_for(db_url, queue_messages=50, queue_bytes=64 * 1024 * 1024)
    async with serve(create_app(settings)) as base:
        await wait_healthy(base)
        await aconn.execute("CREATE TABLE hot (id int PRIMARY KEY, n int, pad text)")
        await aconn.execute("SELECT rowcast.enable_capture('hot')")
        await aconn.execute("INSERT INTO hot SELECT g, 0, repeat('x', 6000) FROM generate_series(1, 5) g")
        async with ws_connect(base) as client:
            await client.subscribe(table="hot", mode="latest")
            # 3,000 large updates of 5 rows (about 20 MB) while the client does not read: far more
            # than socket buffers hold, so its queue overflows and must coalesce, not close.
            for _ in range(600):
                await aconn.execute("UPDATE hot SET n = n + 1")
            latest: dict[int, int] = {}
            async with asyncio.timeout(20):
                while len(latest) < 5 or any(v != 600 for v in latest.values()):
                    frame = await client.recv()
                    if frame["type"] == "change":
                        latest[frame["pk"]["id"]] = frame["row"]["n"]
            assert not client.ws.closed
        changes = [f for f in client.frames if f["type"] == "change"]
    assert set(latest.values()) == {600}
    assert len(changes) < 3000  # coalesced: fewer frames than changes, and never a 4008


async def test_long_poll_pages_with_more_and_no_change_is_lost_between_pages(
    notifier: str, aconn: AConn
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{notifier}/changes", params={"table": "books"}) as resp:
            cursor = (await resp.json())["cursor"]
        for i in range(7):  # seven transactions of three rows
            await aconn.execute(
                "INSERT INTO books (title) SELECT %s || g FROM generate_series(1, 3) g", (f"t{i}-",)
            )
        ids: list[int] = []
        pages = 0
        while True:
            params = {"table": "books", "cursor": cursor, "limit": "5", "wait": "0"}
            async with http.get(f"{notifier}/changes", params=params) as resp:
                body = await resp.json()
            ids += [c["id"] for c in body["changes"]]
            cursor = body["cursor"]
            pages += 1
            if not body["more"]:
                break
    assert sorted(ids) == ids and len(ids) == len(set(ids)) == 21
    assert pages >= 4  # whole transactions of 3 under a limit of 5: at most 3 per page... plus the last


async def test_sse_resumes_from_last_event_id(notifier: str, aconn: AConn) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{notifier}/sse", params={"table": "books"}) as resp:
            last_id = None
            async with asyncio.timeout(3):
                async for raw in resp.content:
                    line = raw.decode().strip()
                    if line.startswith("id: "):
                        last_id = line[4:]
                        break
        assert last_id
        await aconn.execute("INSERT INTO books (title) VALUES ('while away')")
        async with http.get(
            f"{notifier}/sse", params={"table": "books"}, headers={"Last-Event-ID": last_id}
        ) as resp:
            async with asyncio.timeout(3):
                async for raw in resp.content:
                    line = raw.decode().strip()
                    if line.startswith("data: ") and "while away" in line:
                        break


async def test_cursor_older_than_retention_gets_resync_required_everywhere(
    notifier: str, aconn: AConn
) -> None:
    async with ws_connect(notifier) as client:
        old = (await client.subscribe())["cursor"]
    await aconn.execute("INSERT INTO books (title) VALUES ('soon pruned')")
    await aconn.execute("UPDATE rowcast.changes SET at = now() - interval '3 days'")
    await await_prunable(aconn)
    await aconn.execute("SELECT rowcast.prune('1 day')")
    async with ws_connect(notifier) as client:
        reply = await client.subscribe(cursor=old)
    assert reply["type"] == "resync_required" and reply["reason"] == "cursor_expired"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{notifier}/changes", params={"table": "books", "cursor": old}) as resp:
            assert resp.status == 410 and (await resp.json())["error"] == "resync_required"
        async with http.get(f"{notifier}/sse", params={"table": "books", "cursor": old}) as resp:
            async with asyncio.timeout(3):
                async for raw in resp.content:
                    if raw.startswith(b"event: resync_required"):
                        break


async def test_a_cursor_from_the_future_is_refused(notifier: str) -> None:
    async with ws_connect(notifier) as client:
        reply = await client.subscribe(cursor="99999999:99999999:")
    assert reply["type"] == "error" and reply["code"] == "bad_cursor"


async def test_large_rows_announced_by_reference_arrive_whole(notifier: str, aconn: AConn) -> None:
    await aconn.execute("CREATE TABLE notes (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text)")
    await aconn.execute("SELECT rowcast.enable_capture('notes')")
    big = "é" * 500_000
    async with ws_connect(notifier) as client:
        await client.subscribe(table="notes")
        await aconn.execute("INSERT INTO notes (body) VALUES (%s)", (big,))
        change = await client.until(lambda f: f["type"] == "change")
    assert change["row"]["body"] == big
