"""rowcast.client against a scripted server: exact numbers, and undecodable changes do not end it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from rowcast import jsonexact
from rowcast.client import Change, subscribe
from rowcast.commands import format_change

BIG = "1234567890.123456789012345678901234567890"
HUGE = "9" * 400
DEEP = "[" * 1200 + "]" * 1200
AT = '"at":"2026-12-03T10:00:00+00:00"'
ACTOR = '"actor":{"user":"postgres","app":"psql","addr":null,"actor":null,"request_id":null}'


def change_frame(id: int, row: str) -> str:
    return (
        f'{{"type":"change","ref":"c","id":{id},"schema":"public","table":"t","op":"insert",'
        f'"pk":{{"id":{id}}},"row":{row},"old":null,{ACTOR},{AT}}}'
    )


FRAMES = [
    '{"type":"subscribed","ref":"c","cursor":"1:1:"}',
    change_frame(1, f'{{"id":1,"n":{BIG},"h":{HUGE}.5,"i":{HUGE},"t":1e-400,"f":"Infinity"}}'),
    change_frame(2, f'{{"id":2,"j":{DEEP}}}'),
    '{"type":"error","ref":"c","code":"undecodable_change","message":"m","id":3,"schema":"public",'
    '"table":"t","op":"update"}',
    change_frame(4, '{"id":4,"n":0.5}'),
]


@pytest.fixture
async def server() -> AsyncIterator[tuple[TestServer, list[Any]]]:
    received: list[Any] = []

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        received.append(jsonexact.loads((await sock.receive()).data))
        for frame in FRAMES:
            await sock.send_str(frame)
        await sock.receive()  # until the client goes
        return sock

    app = web.Application()
    app.router.add_get("/ws", ws)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    yield srv, received
    await srv.close()


async def take(url: str, n: int, **kw: Any) -> list[Change]:
    got: list[Change] = []
    async with asyncio.timeout(10), aclosing(subscribe(url, "t", **kw)) as changes:
        async for change in changes:
            got.append(change)
            if len(got) == n:
                break
    return got


async def test_regression_client_yields_exact_numbers(server: tuple[TestServer, list[Any]]) -> None:
    """Was 1234567890.1234567, inf and 0.0 (json.loads through float)."""
    srv, _ = server
    (first, *_) = await take(str(srv.make_url("/")), 1)
    row = first.row or {}
    assert str(row["n"]) == BIG and isinstance(row["n"], Decimal)
    assert row["h"] == Decimal(HUGE + ".5") and row["i"] == int(HUGE)
    assert row["t"] == Decimal("1e-400") and row["f"] == "Infinity"
    assert first.error is None and first.raw is None


async def test_regression_undecodable_changes_do_not_end_the_subscription(
    server: tuple[TestServer, list[Any]],
) -> None:
    """A row holding jsonb nested 1,200 deep raised RecursionError out of subscribe()."""
    srv, _ = server
    _, deep, missed, last = await take(str(srv.make_url("/")), 4)
    assert (deep.id, deep.op, deep.pk, deep.error) == (2, "insert", {"id": 2}, "undecodable_change")
    assert deep.row is None and deep.raw == FRAMES[2]  # the frame, as the server sent it
    assert json.loads(deep.raw.replace(DEEP, "[]"))["row"] == {"id": 2, "j": []}
    assert (missed.id, missed.op, missed.pk, missed.error, missed.raw) == (
        3,
        "update",
        None,
        "undecodable_change",
        None,
    )
    assert last.id == 4 and last.row == {"id": 4, "n": Decimal("0.5")}


async def test_client_sends_decimal_filter_operands_as_numbers(server: tuple[TestServer, list[Any]]) -> None:
    srv, received = server
    await take(str(srv.make_url("/")), 1, where={"n": {"gt": Decimal(BIG)}})
    assert str(received[0]["where"]["n"]["gt"]) == BIG


def test_tail_prints_an_undecodable_change_instead_of_failing() -> None:
    missed = Change.undecodable({"id": 3, "schema": "public", "table": "t", "op": "update"}, None)
    assert format_change(missed) == "--:--:--  UPDATE   t   (undecodable_change: row not shown)"
