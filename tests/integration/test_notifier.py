"""The notifier over real sockets on a real Postgres: WebSocket, SSE and long-poll."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import psycopg
import pytest
from rowcast.notifier.app import create_app

from tests.servers import serve, settings_for, wait_healthy, ws_connect

AConn = psycopg.AsyncConnection[tuple[Any, ...]]


@pytest.fixture
async def notifier(db_url: str) -> AsyncIterator[str]:
    async with serve(create_app(settings_for(db_url))) as base:
        await wait_healthy(base)
        yield base


async def insert_book(conn: AConn, title: str, **cols: Any) -> int:
    cols = {"title": title, **cols}
    names = ", ".join(cols)
    marks = ", ".join(["%s"] * len(cols))
    row = await (
        await conn.execute(f"INSERT INTO books ({names}) VALUES ({marks}) RETURNING id", list(cols.values()))
    ).fetchone()
    assert row is not None
    return int(row[0])


async def test_insert_reaches_a_websocket_subscriber(notifier: str, aconn: AConn) -> None:
    async with ws_connect(notifier) as client:
        sub = await client.subscribe()
        assert sub["type"] == "subscribed" and isinstance(sub["cursor"], str)
        book = await insert_book(aconn, "Dune", author="Herbert")
        change = await client.until(lambda f: f["type"] == "change", timeout=1.0)
    assert change["ref"] == "s" and change["op"] == "insert" and change["table"] == "books"
    assert change["pk"] == {"id": book} and change["row"]["title"] == "Dune"
    assert change["actor"]["app"] == "pytest"


async def test_frames_written_together_arrive_whole_and_in_order(notifier: str, aconn: AConn) -> None:
    """The writer sends the frames queued for a client in one write: small frames and ones with
    the 16- and 64-bit length headers, from one transaction and many, each intact, in log order."""
    await aconn.execute("CREATE TABLE pages (id int PRIMARY KEY, body text)")
    await aconn.execute("SELECT rowcast.enable_capture('pages')")
    sizes = [10, 200, 70_000, 5, 130, 66_000, 1]
    async with ws_connect(notifier, max_msg_size=0) as client:
        assert (await client.subscribe(table="pages"))["type"] == "subscribed"
        async with aconn.transaction():
            for n, size in enumerate(sizes):
                await aconn.execute("INSERT INTO pages VALUES (%s, %s)", (n, "x" * size))
        for n in range(len(sizes), len(sizes) + 40):
            await aconn.execute("INSERT INTO pages VALUES (%s, '')", (n,))
        got = []
        while len(got) < len(sizes) + 40:
            frame = await client.until(lambda f: f["type"] == "change")
            got.append((frame["row"]["id"], len(frame["row"]["body"])))
    assert got == list(enumerate(sizes)) + [(n, 0) for n in range(len(sizes), len(sizes) + 40)]


async def test_checkpoints_follow_changes(notifier: str, aconn: AConn) -> None:
    async with ws_connect(notifier) as client:
        await client.subscribe()
        await insert_book(aconn, "x")
        await client.until(lambda f: f["type"] == "change")
        checkpoint = await client.until(lambda f: f["type"] == "checkpoint", timeout=2.0)
    assert isinstance(checkpoint["cursor"], str)


async def test_insert_reaches_an_sse_subscriber(notifier: str, aconn: AConn) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{notifier}/sse", params={"table": "books"}) as resp,
    ):
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        events: list[tuple[str, dict[str, Any]]] = []

        async def read() -> None:
            kind = ""
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line[6:])))
                    if kind == "subscribed":
                        await insert_book(aconn, "via sse")
                    if kind == "change":
                        return

        async with asyncio.timeout(2.0):
            await read()
    assert events[-1][0] == "change" and events[-1][1]["row"]["title"] == "via sse"


async def test_long_poll_waits_for_the_next_change(notifier: str, aconn: AConn) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{notifier}/changes", params={"table": "books"}) as resp:
            first = await resp.json()
        assert first["changes"] == [] and first["cursor"]

        async def later() -> None:
            await asyncio.sleep(0.2)
            await insert_book(aconn, "polled")

        writer = asyncio.create_task(later())
        async with asyncio.timeout(2.0):
            async with http.get(
                f"{notifier}/changes", params={"table": "books", "cursor": first["cursor"], "wait": "5"}
            ) as resp:
                body = await resp.json()
        await writer
    assert [c["row"]["title"] for c in body["changes"]] == ["polled"]
    assert body["cursor"] != first["cursor"] and body["more"] is False


async def test_filters_deliver_rows_entering_as_inserts_and_leaving_as_removals(
    notifier: str, aconn: AConn
) -> None:
    async with ws_connect(notifier) as client:
        await client.subscribe(where={"owner": {"eq": "alice"}}, columns=["title", "owner"])
        bob_book = await insert_book(aconn, "bob's", owner="bob")
        await aconn.execute("UPDATE books SET owner = 'alice' WHERE id = %s", (bob_book,))
        entered = await client.until(lambda f: f["type"] == "change")
        await aconn.execute("UPDATE books SET title = 'renamed' WHERE id = %s", (bob_book,))
        updated = await client.until(lambda f: f["type"] == "change")
        await aconn.execute("UPDATE books SET owner = 'carol' WHERE id = %s", (bob_book,))
        left = await client.until(lambda f: f["type"] == "change")
        await insert_book(aconn, "carol's", owner="carol")
        await insert_book(aconn, "alice's", owner="alice")
        last = await client.until(lambda f: f["type"] == "change")
    assert entered["op"] == "insert" and entered["moved"] == "in" and entered["row"]["owner"] == "alice"
    assert set(entered["row"]) == {"id", "title", "owner"}
    assert (
        updated["op"] == "update"
        and updated["row"]["title"] == "renamed"
        and updated["old"] == {"title": "bob's"}
    )
    assert left["op"] == "delete" and left["moved"] == "out" and left["row"] is None
    assert left["old"] == {"id": bob_book}
    assert last["row"]["title"] == "alice's"


@pytest.mark.parametrize(
    ("frame", "code", "fragment"),
    [
        ("not json", "bad_json", "JSON"),
        ("[1, 2]", "bad_frame", "object"),
        (json.dumps({"type": "dance"}), "unknown_type", "dance"),
        (json.dumps({"type": "subscribe", "ref": "a", "table": "nope"}), "unknown_table", "nope"),
        (
            json.dumps({"type": "subscribe", "ref": "a", "table": "books", "where": {"zzz": {"eq": 1}}}),
            "unknown_column",
            "zzz",
        ),
        (
            json.dumps(
                {"type": "subscribe", "ref": "a", "table": "books", "where": {"title": {"regex": "x"}}}
            ),
            "unknown_operator",
            "regex",
        ),
        (
            json.dumps({"type": "subscribe", "ref": "a", "table": "books", "columns": ["nope"]}),
            "unknown_column",
            "nope",
        ),
        (
            json.dumps({"type": "subscribe", "ref": "a", "table": "books", "cursor": "garbage"}),
            "bad_cursor",
            "malformed",
        ),
        (
            json.dumps({"type": "subscribe", "ref": "a", "table": "books", "mode": "fast"}),
            "bad_frame",
            "mode",
        ),
        (json.dumps({"type": "subscribe", "table": "books"}), "bad_frame", "ref"),
        (json.dumps({"type": "unsubscribe", "ref": "zz"}), "unknown_ref", "zz"),
    ],
)
async def test_bad_frames_get_error_frames_and_the_socket_stays_open(
    notifier: str, frame: str, code: str, fragment: str
) -> None:
    async with ws_connect(notifier) as client:
        await client.ws.send_str(frame)
        error = await client.recv()
        assert error["type"] == "error" and error["code"] == code and fragment in error["message"]
        await client.send(type="ping")
        assert (await client.recv())["type"] == "pong"


async def test_unsubscribe_stops_delivery(notifier: str, aconn: AConn) -> None:
    async with ws_connect(notifier) as client:
        await client.subscribe(ref="a")
        await client.subscribe(ref="b", where={"owner": {"eq": "x"}})
        await client.send(type="unsubscribe", ref="a")
        await client.send(type="ping")
        await client.until(lambda f: f["type"] == "pong")
        await insert_book(aconn, "only b", owner="x")
        change = await client.until(lambda f: f["type"] == "change")
    assert change["ref"] == "b"
