"""Notifier security: tokens, row scopes in every path, Origin checks, limits, fuzzing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import psycopg
import pytest
from rowcast.notifier.app import create_app

from rowcast.auth import issue_token
from tests.servers import Process, free_port, serve, settings_for, wait_healthy, wait_port, ws_connect

SECRET = "test-secret-" + "s" * 32
AConn = psycopg.AsyncConnection[tuple[Any, ...]]


def token(sub: str = "alice", **kwargs: Any) -> str:
    kwargs.setdefault("read", ["books"])
    kwargs.setdefault("scopes", [f"books.owner={sub}"])
    return issue_token(SECRET, sub, **kwargs)


@pytest.fixture
async def secure(db_url: str) -> AsyncIterator[str]:
    settings = settings_for(
        db_url,
        auth="token",
        jwt_secret=SECRET,
        max_subscriptions=3,
        max_client_rate=5,
        max_connections_per_subject=2,
        max_frame_bytes=4096,
    )
    async with serve(create_app(settings)) as base:
        await wait_healthy(base)
        yield base


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


async def handshake_status(base: str, **kwargs: Any) -> int:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(base.replace("http", "ws") + "/ws", **kwargs):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


FORGED = [
    pytest.param(None, id="missing"),
    pytest.param("not-a-jwt", id="malformed"),
    pytest.param(
        jwt.encode({"sub": "alice", "aud": "rowcast", "exp": time.time() + 60}, "wrong-key-" * 4),
        id="wrong-key",
    ),
    pytest.param(
        jwt.encode({"sub": "alice", "aud": "rowcast", "exp": time.time() + 60}, None, algorithm="none"),
        id="alg-none",
    ),
    pytest.param(issue_token(SECRET, "alice", ttl=-10), id="expired"),
    pytest.param(issue_token(SECRET, "alice", audience="someone-else"), id="wrong-audience"),
]


@pytest.mark.parametrize("tok", FORGED)
async def test_bad_tokens_are_refused_on_ws_sse_and_long_poll(secure: str, tok: str | None) -> None:
    headers = bearer(tok) if tok else {}
    assert await handshake_status(secure, headers=headers) == 401
    async with aiohttp.ClientSession() as http:
        for path in ("/sse", "/changes"):
            async with http.get(secure + path, params={"table": "books"}, headers=headers) as resp:
                assert resp.status == 401
                body = await resp.json()
                assert body["error"] == "unauthorized" and body["message"]


async def test_token_accepted_by_header_subprotocol_and_query(secure: str) -> None:
    tok = token()
    assert await handshake_status(secure, headers=bearer(tok)) == 101
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            secure.replace("http", "ws") + "/ws", protocols=("rowcast.v1", f"bearer.{tok}")
        ) as ws:
            assert ws.protocol == "rowcast.v1"
        async with http.get(secure + "/changes", params={"table": "books", "token": tok}) as resp:
            assert resp.status == 200


async def test_tables_outside_the_token_are_refused_with_an_error_frame(secure: str) -> None:
    async with ws_connect(secure, headers=bearer(token())) as client:
        reply = await client.subscribe(table="authors")
    assert reply["type"] == "error" and reply["code"] == "forbidden"


async def test_scopes_hold_in_live_delivery_replay_and_on_owner_changes(secure: str, aconn: AConn) -> None:
    async with ws_connect(secure, headers=bearer(token("alice"))) as alice:
        sub = await alice.subscribe()
        raw: list[str] = []
        await aconn.execute(
            "INSERT INTO books (title, owner) VALUES ('bob secret', 'bob'), ('alice own', 'alice')"
        )
        await aconn.execute("UPDATE books SET owner = 'bob', title = 'moved to bob' WHERE owner = 'alice'")
        await aconn.execute(
            "UPDATE books SET owner = 'alice', title = 'gift from bob' WHERE title = 'bob secret'"
        )
        frames = []
        while len(frames) < 3:
            frame = await alice.recv()
            raw.append(json.dumps(frame))
            if frame["type"] == "change":
                frames.append(frame)
        inserted, moved_out, moved_in = frames
        assert inserted["op"] == "insert" and inserted["row"]["title"] == "alice own"
        # Leaving alice's scope: a removal with the key only, never bob's new data.
        assert moved_out["op"] == "delete" and moved_out["moved"] == "out"
        assert moved_out["row"] is None and moved_out["old"] == {"id": inserted["pk"]["id"]}
        assert moved_in["op"] == "insert" and moved_in["moved"] == "in" and moved_in["old"] is None
        # Replay from the start: the same view, still nothing of bob's.
        await alice.subscribe(ref="again", cursor=sub["cursor"])
        replayed = []
        while len(replayed) < 3:
            frame = await alice.recv()
            raw.append(json.dumps(frame))
            if frame["type"] == "change" and frame["ref"] == "again":
                replayed.append(frame)
    assert [f["op"] for f in replayed] == ["insert", "delete", "insert"]
    for text in raw:
        assert "bob secret" not in text and "moved to bob" not in text and '"bob"' not in text


async def test_scopes_hold_in_long_poll_and_sse(secure: str, aconn: AConn) -> None:
    tok = token("alice")
    async with aiohttp.ClientSession() as http:
        async with http.get(secure + "/changes", params={"table": "books"}, headers=bearer(tok)) as resp:
            cursor = (await resp.json())["cursor"]
        await aconn.execute(
            "INSERT INTO books (title, owner) VALUES ('bob secret', 'bob'), ('alice own', 'alice')"
        )
        async with http.get(
            secure + "/changes", params={"table": "books", "cursor": cursor, "wait": "0"}, headers=bearer(tok)
        ) as resp:
            text = await resp.text()
        body = json.loads(text)
        assert [c["row"]["title"] for c in body["changes"]] == ["alice own"] and "bob" not in text
        async with http.get(
            secure + "/sse", params={"table": "books", "cursor": cursor, "token": tok}
        ) as resp:
            seen = ""
            async with asyncio.timeout(5):
                async for line in resp.content:
                    seen += line.decode()
                    if "alice own" in seen:
                        break
    assert "bob" not in seen


async def test_expired_token_closes_the_socket_with_4001(secure: str) -> None:
    async with ws_connect(secure, headers=bearer(token(ttl=1))) as client:
        await client.subscribe()
        async with asyncio.timeout(5):
            while not client.ws.closed:
                msg = await client.ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    break
        assert client.ws.close_code == 4001


async def test_foreign_origin_is_refused_same_origin_allowed(secure: str) -> None:
    tok = token()
    assert await handshake_status(secure, headers={**bearer(tok), "Origin": "https://evil.example"}) == 403
    assert await handshake_status(secure, headers={**bearer(tok), "Origin": secure}) == 101
    async with aiohttp.ClientSession() as http:
        async with http.get(
            secure + "/sse",
            params={"table": "books", "token": tok},
            headers={"Origin": "https://evil.example"},
        ) as resp:
            assert resp.status == 403 and (await resp.json())["error"] == "origin_not_allowed"
        # Long-poll is admitted by the same path as /ws and /sse (it was not checked at all).
        async with http.get(
            secure + "/changes",
            params={"table": "books", "token": tok},
            headers={"Origin": "https://evil.example"},
        ) as resp:
            assert resp.status == 403 and (await resp.json())["error"] == "origin_not_allowed"
        async with http.get(
            secure + "/changes", params={"table": "books", "token": tok}, headers={"Origin": secure}
        ) as resp:
            assert resp.status == 200 and "cursor" in await resp.json()


async def test_configured_origin_allow_list(db_url: str) -> None:
    settings = settings_for(db_url, allowed_origins=("https://app.example",))
    async with serve(create_app(settings)) as base:
        await wait_healthy(base)
        assert await handshake_status(base, headers={"Origin": "https://app.example"}) == 101
        assert await handshake_status(base, headers={"Origin": base}) == 403


async def test_oversized_frame_closes_with_1009(secure: str) -> None:
    async with ws_connect(secure, headers=bearer(token())) as client:
        await client.ws.send_str(json.dumps({"type": "ping", "pad": "x" * 10000}))
        msg = await client.ws.receive()
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert client.ws.close_code == 1009


async def test_subscriptions_per_socket_are_limited(secure: str) -> None:
    async with ws_connect(secure, headers=bearer(token())) as client:
        for i in range(3):
            assert (await client.subscribe(ref=f"s{i}"))["type"] == "subscribed"
        refused = await client.subscribe(ref="s3")
    assert refused["code"] == "too_many_subscriptions"


async def test_message_rate_is_limited_then_the_socket_is_closed_with_4029(secure: str) -> None:
    async with ws_connect(secure, headers=bearer(token())) as client:
        for _ in range(200):
            if client.ws.closed:
                break
            await client.ws.send_str('{"type":"ping"}')
        codes = []
        async with asyncio.timeout(5):
            while True:
                msg = await client.ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                codes.append(json.loads(msg.data).get("code"))
    assert "rate_limited" in codes
    assert client.ws.close_code == 4029


async def test_connections_per_subject_are_limited(secure: str) -> None:
    tok = token()
    async with ws_connect(secure, headers=bearer(tok)), ws_connect(secure, headers=bearer(tok)):
        assert await handshake_status(secure, headers=bearer(tok)) == 429
        assert await handshake_status(secure, headers=bearer(token("bob"))) == 101


async def test_tokens_never_appear_in_logs_or_metrics(db_url: str) -> None:
    port = free_port()
    proc = Process(
        ["notifier", "--port", str(port), "--database-url", db_url],
        {"ROWCAST_AUTH": "token", "ROWCAST_JWT_SECRET": SECRET, "ROWCAST_LOG_LEVEL": "DEBUG"},
    ).start()
    base = f"http://127.0.0.1:{port}"
    good, bad = token(), token()[:-4] + "AAAA"
    try:
        await asyncio.to_thread(wait_port, port)
        await wait_healthy(base)
        async with aiohttp.ClientSession() as http:
            for tok in (good, bad):
                async with http.get(base + "/changes", params={"table": "books", "token": tok}):
                    pass
                async with http.get(
                    base + "/sse",
                    params={"table": "books", "token": tok, "wait": "0"},
                    timeout=aiohttp.ClientTimeout(total=1),
                ) as resp:
                    resp.close()
            async with ws_connect(base, headers=bearer(good)) as client:
                await client.subscribe()
            async with http.get(base + "/metrics", headers=bearer(token("ops", metrics=True))) as resp:
                metrics = await resp.text()
    finally:
        proc.stop()
    output = proc.output()
    proc.close()
    assert "GET /changes" in output  # the access log ran
    for secret in (good, bad, SECRET, good.split(".")[2]):
        assert secret not in output and secret not in metrics
