"""Finding 6: long-poll had no concurrency limit; one token's parallel loops slowed everyone."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import psycopg
import pytest

from tests.security.conftest import TOKEN_ENV, bearer, token
from tests.servers import Running, rowcast_server, ws_connect

AConn = psycopg.AsyncConnection[tuple[Any, ...]]
LOOPS = 40  # as in the report
BACKLOG = 3000


async def _cursor(aconn: AConn) -> str:
    row = await (await aconn.execute("SELECT pg_current_snapshot()::text")).fetchone()
    assert row is not None
    return str(row[0])


async def _poll(http: aiohttp.ClientSession, base: str, tok: str, params: dict[str, str]) -> tuple[int, str]:
    async with http.get(base + "/changes", params=params, headers=bearer(tok)) as resp:
        body = await resp.json()
        return resp.status, str(body.get("error", ""))


async def _seconds_to_subscribe(base: str, tok: str) -> float:
    started = time.monotonic()
    async with ws_connect(base, headers=bearer(tok)) as client:
        assert (await client.subscribe())["type"] == "subscribed"
    return time.monotonic() - started


@pytest.fixture
async def quiet_notifier(db_url: str) -> AsyncIterator[Running]:
    """A notifier that logs no access lines: thousands of them would fill its unread stdout pipe."""
    async with rowcast_server("notifier", db_url, {**TOKEN_ENV, "ROWCAST_LOG_LEVEL": "WARNING"}) as server:
        yield server


async def test_parallel_long_poll_loops_of_one_token_get_429_and_slow_nobody(
    quiet_notifier: Running, aconn: AConn
) -> None:
    notifier = quiet_notifier
    old = await _cursor(aconn)
    await aconn.execute(
        "INSERT INTO books (title, owner) SELECT 'b' || g, 'mallory' FROM generate_series(1, %s) g",
        (BACKLOG,),
    )
    mallory = token("mallory", read=["books"])
    statuses: Counter[tuple[int, str]] = Counter()
    stop = asyncio.Event()

    async def loop(http: aiohttp.ClientSession) -> None:
        # Each request reads a big page of the backlog: work for the database on every poll.
        params = {"table": "books", "cursor": old, "limit": "2000", "wait": "0"}
        while not stop.is_set():
            statuses[await _poll(http, notifier.base, mallory, params)] += 1

    bob = token("bob", read=["books"])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        loops = [asyncio.create_task(loop(http)) for _ in range(LOOPS)]
        try:
            await asyncio.sleep(1)
            took = [await _seconds_to_subscribe(notifier.base, bob) for _ in range(5)]
        finally:
            stop.set()
            await asyncio.gather(*loops)
    # Without the limit every subscribe took 1-2 s here on a quiet machine, 8-12 s in the report.
    # The median, so one scheduling stall does not decide. When other test files run beside this
    # one on the same cores (pytest-xdist), the notifier gets a fraction of a core and only the
    # report's magnitude can be judged; `pytest -n 1` judges the quiet-machine bound.
    alone = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) <= 1
    assert sorted(took)[len(took) // 2] < (0.75 if alone else 5.0), took
    assert statuses[(429, "too_many_longpolls")] > 0 and statuses[(200, "")] > 0, statuses
    assert set(statuses) == {(429, "too_many_longpolls"), (200, "")}, statuses

    # At once, with nothing to read: exactly the limit wait, the rest are refused on arrival.
    now = await _cursor(aconn)
    params = {"table": "books", "cursor": now, "wait": "2"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        answers = await asyncio.gather(*(_poll(http, notifier.base, mallory, params) for _ in range(LOOPS)))
    assert Counter(answers) == {(200, ""): 4, (429, "too_many_longpolls"): LOOPS - 4}


async def test_long_polls_in_flight_are_bounded_in_all(db_url: str, aconn: AConn) -> None:
    now = await _cursor(aconn)
    params = {"table": "books", "cursor": now, "wait": "2"}
    env = {**TOKEN_ENV, "ROWCAST_MAX_LONGPOLLS": "6"}
    async with (
        rowcast_server("notifier", db_url, env) as server,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
    ):
        polls = [_poll(http, server.base, token(who, read=["books"]), params) for who in ("a", "b", "c") * 3]
        answers = await asyncio.gather(*polls)
    assert Counter(answers) == {(200, ""): 6, (503, "busy"): 3}
