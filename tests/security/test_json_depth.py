"""Finding 9: deeply nested JSON from a client raised RecursionError; every parser refuses it."""

from __future__ import annotations

import aiohttp

from tests.security.conftest import bearer, token
from tests.servers import Running, ws_connect

DEEP = "[" * 3000 + "]" * 3000  # 6 kB: under every size limit, 3,000 levels deep
DEEP_QUERY = "[" * 1200 + "]" * 1200  # deep enough to overflow json.loads, short enough for a URL


async def test_deeply_nested_frame_gets_an_error_frame_and_the_socket_stays_usable(notifier: Running) -> None:
    tok = token("alice", read=["books"], scopes=["books.owner=alice"])
    async with ws_connect(notifier.base, headers=bearer(tok)) as client:
        await client.ws.send_str(DEEP)
        error = await client.recv()
        nested_where = '{"title": {"in": ' + "[" * 200 + '"x"' + "]" * 200 + "}}"
        await client.ws.send_str(
            '{"type": "subscribe", "ref": "r", "table": "books", "where": ' + nested_where + "}"
        )
        error2 = await client.recv()
        await client.send(type="ping")
        pong = await client.recv()
        assert (await client.subscribe())["type"] == "subscribed"
    assert error["type"] == "error" and error["code"] == "bad_json" and "nested" in error["message"]
    assert error2["type"] == "error" and error2["code"] == "bad_json"
    assert pong["type"] == "pong"
    assert "Traceback" not in notifier.stop()


async def test_deeply_nested_where_on_sse_and_long_poll_is_a_400(notifier: Running) -> None:
    tok = token("alice", read=["books"], scopes=["books.owner=alice"])
    async with aiohttp.ClientSession() as http:
        for path in ("/sse", "/changes"):
            async with http.get(
                notifier.base + path, params={"table": "books", "where": DEEP_QUERY}, headers=bearer(tok)
            ) as resp:
                body = await resp.json()
            assert resp.status == 400, path
            assert body["error"] == "bad_json" and "nested" in body["message"], body
    assert "Traceback" not in notifier.stop()


async def test_deeply_nested_api_body_is_a_400(api: Running) -> None:
    tok = token("alice", read=["books"], write=["books"], scopes=["books.owner=alice"])
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            api.base + "/api/books",
            data=DEEP,
            headers={**bearer(tok), "Content-Type": "application/json"},
        ) as resp,
    ):
        body = await resp.json()
    assert resp.status == 400 and body["error"] == "bad_json" and "nested" in body["message"]
    assert "Traceback" not in api.stop()
