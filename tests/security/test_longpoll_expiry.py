"""Finding 8: long-poll checked the token only on arrival, and returned a change committed after
the token's expiry."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import psycopg

from tests.security.conftest import bearer, token
from tests.servers import Running

AConn = psycopg.AsyncConnection[tuple[Any, ...]]


async def test_a_long_poll_answers_401_at_the_tokens_expiry(notifier: Running, aconn: AConn) -> None:
    row = await (await aconn.execute("SELECT pg_current_snapshot()::text")).fetchone()
    assert row is not None
    issued = time.time()
    tok = token("alice", read=["books"], ttl=2, now=issued)
    expires = int(issued) + 2  # `exp` is whole seconds
    params = {"table": "books", "cursor": str(row[0]), "wait": "10"}

    async def poll() -> tuple[int, dict[str, Any], float]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(notifier.base + "/changes", params=params, headers=bearer(tok)) as resp,
        ):
            return resp.status, await resp.json(), time.time()

    polling = asyncio.create_task(poll())
    await asyncio.sleep(expires + 0.5 - time.time())
    await aconn.execute("INSERT INTO books (title, owner) VALUES ('after expiry', 'alice')")
    status, body, answered = await asyncio.wait_for(polling, 15)
    assert status == 401 and body["error"] == "token_expired", body
    assert "after expiry" not in str(body)
    assert answered < expires + 0.5  # at the expiry, not when the change came or `wait` ran out
