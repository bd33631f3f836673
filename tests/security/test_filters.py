"""Finding 1: a `like` filter ran as a backtracking regex and froze the notifier for seconds."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import psycopg

from tests.security.conftest import bearer, token
from tests.servers import Running, ws_connect

AConn = psycopg.AsyncConnection[tuple[Any, ...]]
EVIL = "%a%a%a%a%a%a!"


async def test_backtracking_like_pattern_never_blocks_the_notifier(notifier: Running, aconn: AConn) -> None:
    alice = token("alice", read=["books"], scopes=["books.owner=alice"])
    bob = token("bob", read=["books"], scopes=["books.owner=bob"])
    async with (
        ws_connect(notifier.base, headers=bearer(alice)) as attacker,
        ws_connect(notifier.base, headers=bearer(bob)) as victim,
    ):
        assert (await attacker.subscribe(where={"title": {"like": EVIL}}))["type"] == "subscribed"
        assert (await victim.subscribe())["type"] == "subscribed"
        # 90 characters: the regex took 5-7 s on this title, with the whole notifier waiting.
        await aconn.execute("INSERT INTO books (title, owner) VALUES (%s, 'bob')", ("a" * 90,))
        change = await victim.until(lambda f: f["type"] == "change", timeout=2)
        await attacker.send(type="ping")
        await attacker.until(lambda f: f["type"] == "pong", timeout=1)
    assert change["row"]["title"] == "a" * 90


async def test_like_filters_still_match_as_sql_like(notifier: Running, aconn: AConn) -> None:
    alice = token("alice", read=["books"], scopes=["books.owner=alice"])
    async with ws_connect(notifier.base, headers=bearer(alice)) as client:
        await client.subscribe(where={"title": {"like": "%50\\% off_"}})
        await aconn.execute(
            "INSERT INTO books (title, owner) VALUES ('now 50% off!', 'alice'), ('now 50 off!', 'alice'),"
            " ('now 50% off!', 'bob'), ('again 50% off?', 'alice')"
        )
        seen = [(await client.until(lambda f: f["type"] == "change"))["row"]["title"] for _ in range(2)]
        await client.send(type="ping")
        await client.until(lambda f: f["type"] == "pong")
    assert seen == ["now 50% off!", "again 50% off?"]


async def test_over_long_like_patterns_are_refused_by_the_notifier_and_the_api(
    notifier: Running, api: Running
) -> None:
    pattern = "%" + "a_" * 32 + "!%"
    alice = token("alice", read=["books"], scopes=["books.owner=alice"])
    async with ws_connect(notifier.base, headers=bearer(alice)) as client:
        reply = await client.subscribe(where={"title": {"like": pattern}})
    assert reply["type"] == "error" and reply["code"] == "bad_value" and "64" in reply["message"]
    async with (
        aiohttp.ClientSession() as http,
        http.get(api.base + "/api/books", params={"title.like": pattern}, headers=bearer(alice)) as resp,
    ):
        body = await resp.json()
    assert resp.status == 400 and body["error"] == "bad_query" and "64" in body["message"]


async def test_the_notifier_answers_while_worst_like_filters_meet_the_longest_title(
    notifier: Running, aconn: AConn
) -> None:
    alice = token("alice", read=["books"], scopes=["books.owner=alice"])
    patterns = [EVIL, "%_" * 10 + "!", "%" + "a_" * 30 + "!%", "%a%" * 20 + "!"]
    async with ws_connect(notifier.base, headers=bearer(alice)) as client:
        for i, pattern in enumerate(patterns):
            await client.subscribe(ref=f"p{i}", where={"title": {"like": pattern}})
        async with asyncio.timeout(5):
            await aconn.execute("INSERT INTO books (title, owner) VALUES (%s, 'alice')", ("a" * 300,))
            await client.send(type="ping")
            await client.until(lambda f: f["type"] == "pong")
