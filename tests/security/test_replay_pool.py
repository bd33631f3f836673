"""Finding 2: resumes that wait for a non-reading client held pooled connections in a transaction."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any
from urllib.parse import quote

import aiohttp
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from rowcast.notifier.replay import CursorExpired, LogReader, ReadGate
from rowcast.notifier.snapshot import Snapshot

from tests.security.conftest import TOKEN_ENV, bearer, token
from tests.servers import rowcast_server, ws_connect

AConn = psycopg.AsyncConnection[tuple[Any, ...]]
STREAMS = 10  # more than the notifier's pool (8), fewer than one subject's connection limit (32)
CHANGES = 6000  # with a queue of 50 messages: far more than half of it, and than a socket buffers
IDLE_IN_TX = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE application_name = 'rowcast-notifier' AND state = 'idle in transaction'"
)


async def _stalled_sse(port: int, tok: str, cursor: str) -> asyncio.StreamWriter:
    """An SSE resume from `cursor` whose client never reads: a tiny receive buffer fills at once."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    _, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        f"GET /sse?table=books&cursor={quote(cursor)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {tok}\r\n\r\n".encode()
    )
    await writer.drain()
    return writer


async def _seconds_to_subscribe(base: str, tok: str) -> float:
    started = time.monotonic()
    async with ws_connect(base, headers=bearer(tok)) as client:
        reply = await client.subscribe()
    assert reply["type"] == "subscribed", reply
    return time.monotonic() - started


async def test_stalled_resumes_hold_no_pooled_connection(db_url: str, aconn: AConn) -> None:
    row = await (await aconn.execute("SELECT pg_current_snapshot()::text")).fetchone()
    assert row is not None
    cursor = str(row[0])
    for _ in range(3):
        await aconn.execute(
            "INSERT INTO books (title, owner) SELECT repeat('x', 290) || g, 'mallory' "
            "FROM generate_series(1, %s) g",
            (CHANGES // 3,),
        )
    env = {**TOKEN_ENV, "ROWCAST_QUEUE_MESSAGES": "50"}
    async with rowcast_server("notifier", db_url, env) as server:
        mallory = token("mallory", read=["books"])
        writers = [await _stalled_sse(server.port, mallory, cursor) for _ in range(STREAMS)]
        try:
            await asyncio.sleep(3)  # every replay has filled its client's socket and queue by now
            for _ in range(10):  # over two seconds: none of the notifier's backends waits in a transaction
                idle = await (await aconn.execute(IDLE_IN_TX)).fetchone()
                assert idle == (0,)
                await asyncio.sleep(0.2)
            bob = token("bob", read=["books"])
            async with asyncio.timeout(10):
                assert await _seconds_to_subscribe(server.base, bob) < 2
                started = time.monotonic()
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(
                        server.base + "/changes",
                        params={"table": "books", "cursor": cursor, "limit": "10", "wait": "0"},
                        headers=bearer(bob),
                    ) as resp,
                ):
                    assert resp.status == 200
                    assert len((await resp.json())["changes"]) >= 10
                assert time.monotonic() - started < 2
        finally:
            for writer in writers:
                writer.close()


async def _books(aconn: AConn, count: int) -> Snapshot:
    """A cursor, then `count` book inserts in separate transactions after it."""
    row = await (await aconn.execute("SELECT pg_current_snapshot()::text")).fetchone()
    assert row is not None
    for n in range(count):
        await aconn.execute("INSERT INTO books (title, owner) VALUES (%s, 'alice')", (f"b{n}",))
    return Snapshot.parse(row[0])


async def test_a_replay_reads_in_pages_in_id_order_and_resyncs_on_a_prune_between_pages(
    db_url: str, aconn: AConn
) -> None:
    since = await _books(aconn, 7)
    async with AsyncConnectionPool(
        db_url, min_size=1, max_size=2, open=False, kwargs={"autocommit": True}
    ) as pool:
        reader = LogReader(pool, ReadGate(1), 5.0)
        replay = await reader.replay("alice", since, ("public", "books"), batch=3)
        pages = [[e.id for e in page] async for page in replay.pages()]
        assert [len(p) for p in pages] == [3, 3, 1]
        ids = [i for p in pages for i in p]
        assert ids == sorted(ids) and len(set(ids)) == 7

        replay = await reader.replay("alice", since, ("public", "books"), batch=3)
        pages_left = replay.pages()
        assert len(await anext(pages_left)) == 3
        # A prune between two pages that may have removed what the cursor had not seen.
        await aconn.execute(
            "INSERT INTO rowcast.prune_state (pruned_xid) VALUES (%s::text::xid8)", (str(since.xmax),)
        )
        with pytest.raises(CursorExpired):
            await anext(pages_left)


async def test_a_page_read_is_bounded_by_the_read_timeout(db_url: str, aconn: AConn) -> None:
    since = await _books(aconn, 1)
    async with (
        AsyncConnectionPool(db_url, min_size=1, max_size=1, open=False, kwargs={"autocommit": True}) as pool,
        await psycopg.AsyncConnection.connect(db_url) as locker,
    ):
        await locker.execute("LOCK TABLE rowcast.changes IN ACCESS EXCLUSIVE MODE")  # until rollback
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            await LogReader(pool, ReadGate(1), 0.3).replay("alice", since, ("public", "books"))
        assert time.monotonic() - started < 3
        await locker.rollback()
        async with pool.connection() as conn:  # the connection came back to the pool, usable
            assert await (await conn.execute("SELECT 1")).fetchone() == (1,)


async def test_the_read_gate_queues_a_subjects_extra_reads_and_lets_others_through() -> None:
    gate = ReadGate(2)
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold(subject: str) -> None:
        async with gate.hold(subject):
            held.set()
            await release.wait()

    holders = [asyncio.create_task(hold("mallory")) for _ in range(2)]
    await held.wait()
    third = asyncio.create_task(hold("mallory"))
    await asyncio.sleep(0.05)
    async with asyncio.timeout(1), gate.hold("bob"):  # another subject is never held up
        pass
    assert not third.done()  # queued, not refused
    release.set()
    await asyncio.wait_for(asyncio.gather(*holders, third), 2)
    assert gate.subjects == 0  # nothing kept for subjects with no reads
