"""After heavy client churn on every transport, the notifier holds nothing for clients that left.

Sessions, subscriptions, long-poll waiters, per-subject connection counts, sockets, streams,
client tasks and pooled Postgres connections all return to their idle state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import psycopg
import pytest
from aiohttp import web
from rowcast.notifier.app import create_app
from rowcast.notifier.state import ACCESS, LISTENER, LONGPOLLS, NOTIFIER, SOCKETS, STREAMS

from rowcast.client import subscribe
from tests.servers import serve, settings_for, wait_healthy, wait_until, ws_connect

AConn = psycopg.AsyncConnection[tuple[Any, ...]]
CLIENT_TASKS = ("rowcast-ws-", "rowcast-sse-", "rowcast-subscribe-")


@pytest.fixture
async def app_and_base(db_url: str) -> AsyncIterator[tuple[web.Application, str]]:
    app = create_app(settings_for(db_url, queue_messages=50, queue_bytes=64 * 1024))
    async with serve(app) as base:
        await wait_healthy(base)
        yield app, base


async def drop_mid_replay(base: str, cursor: str) -> None:
    async with ws_connect(base) as client:
        await client.send(type="subscribe", ref="r", table="books", cursor=cursor)
        await client.send(type="subscribe", ref="q", table="authors", where={"born": {"gt": 1}})
        await client.send(type="unsubscribe", ref="q")
        await client.send(type="subscribe", ref="bad", table="nope")
        await asyncio.sleep(random.uniform(0, 0.05))  # leave at a random point of the replay


async def stall_until_closed(base: str, aconn: AConn, dropped: Callable[[], bool]) -> int | None:
    """Subscribe, read nothing while ~8 MB of changes arrive: the server must close us (4008).

    (Loopback socket buffers absorb a few MB before the server's writer even blocks.)
    """
    async with ws_connect(base) as client:
        await client.subscribe()
        await aconn.execute(
            "INSERT INTO books (title, author) SELECT 'stall ' || g || repeat('t', 250), repeat('s', 200) "
            "FROM generate_series(1, 10000) g"
        )
        await wait_until(dropped, timeout=20)
        async with asyncio.timeout(20):
            while (await client.ws.receive()).type not in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
            ):
                pass
        return client.ws.close_code


async def sse_then_leave(base: str, cursor: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/sse", params={"table": "books", "cursor": cursor}) as resp,
    ):
        assert resp.status == 200
        await resp.content.readline()


async def longpoll_then_leave(base: str, cursor: str) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.2), aiohttp.ClientSession() as http:
            async with http.get(
                f"{base}/changes", params={"table": "authors", "cursor": cursor, "wait": "1"}
            ) as resp:
                await resp.read()


async def python_client_then_leave(base: str) -> None:
    async def consume() -> None:
        async for _ in subscribe(base, "books", max_backoff=0.2):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(random.uniform(0.05, 0.3))
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.timeout(90)
async def test_nothing_is_left_behind_after_every_client_leaves(
    app_and_base: tuple[web.Application, str], aconn: AConn
) -> None:
    app, base = app_and_base
    notifier, listener = app[NOTIFIER], app[LISTENER]
    async with ws_connect(base) as first:
        cursor = (await first.subscribe())["cursor"]
    # First alone, so the drop it waits for is its own.
    assert await stall_until_closed(base, aconn, lambda: notifier.metrics.drops._value.get() > 0) == 4008
    await aconn.execute("INSERT INTO books (title) SELECT 'seed ' || g FROM generate_series(1, 3000) g")

    async def writes() -> None:
        for i in range(60):
            await aconn.execute("INSERT INTO authors (name, born) VALUES (%s, %s)", (f"a{i}", 1900 + i))
            await asyncio.sleep(0.02)

    await asyncio.gather(
        writes(),
        *(drop_mid_replay(base, cursor) for _ in range(12)),
        *(sse_then_leave(base, cursor) for _ in range(6)),
        *(longpoll_then_leave(base, cursor) for _ in range(6)),
        *(python_client_then_leave(base) for _ in range(6)),
    )

    def idle() -> bool:
        hub = notifier.hub
        return not (
            hub.sessions
            or hub.by_table
            or hub.waiters
            or app[SOCKETS]
            or app[STREAMS]
            or app[ACCESS].counts
            or app[LONGPOLLS].in_flight
            or notifier.reads.gate.subjects
        )

    await wait_until(idle, timeout=15)
    leftover = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(CLIENT_TASKS)]
    assert leftover == []
    metrics = notifier.metrics.render().decode()
    open_connections = [
        line
        for line in metrics.splitlines()
        if line.startswith("rowcast_connections{") and not line.endswith(" 0.0")
    ]
    assert open_connections == []
    assert "rowcast_subscriptions 0.0" in metrics
    stats = notifier.pool.get_stats()
    assert stats.get("requests_waiting", 0) == 0 and stats["pool_size"] <= 8
    assert listener.ready
    # Still serving after all that: a new subscriber gets new changes.
    async with ws_connect(base) as client:
        await client.subscribe(table="authors")
        await aconn.execute("INSERT INTO authors (name) VALUES ('after')")
        change = await client.until(lambda f: f["type"] == "change")
    assert json.dumps(change["row"]["name"]) == '"after"'
