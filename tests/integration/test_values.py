"""The type matrix: what a subscriber gets equals what Postgres says of the row, on every transport.

A captured table with columns across the built-in type families and their edge values. For each
change, the row (and old image) every transport delivers, parsed with the exact codec, equals
`SELECT to_jsonb(t) FROM t` parsed the same way: WebSocket unfiltered, WebSocket filtered and
projected, SSE, long-poll, and rowcast.client. A jsonb nested 1,200 deep goes verbatim to
unfiltered subscribers and as an `undecodable_change` error to filtered ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import psycopg
import pytest
from rowcast.notifier.app import create_app

from rowcast import jsonexact
from rowcast.client import Change, subscribe
from tests.servers import serve, settings_for, wait_healthy, ws_connect

AConn = psycopg.AsyncConnection[tuple[Any, ...]]

BIG = "1234567890.123456789012345678901234567890"
BIG_PLUS = "1234567890.123456789012345678901234567891"
FLOAT_TWIN = "1234567890.1234567"  # float(BIG) == float(FLOAT_TWIN): a float filter can't tell
N400 = "9" * 399 + "8"
DEEP = "[" * 1200 + "]" * 1200  # as Postgres writes it
LONG = "long ✓ " * 30_000  # makes the payload too big for NOTIFY: announced by reference

SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy ☀');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TYPE pair AS (a numeric, b text, c int[]);
CREATE TABLE vals (
    id int PRIMARY KEY,
    num numeric, n400 numeric, ntiny numeric, nnan numeric, ninf numeric,
    f4 real, f4nan real, f8 double precision, f8inf float8, f8ninf float8, f8tiny float8,
    i2 smallint, i8max bigint, i8min bigint, flag boolean,
    ts timestamp, tstz timestamptz, d date, ts_inf timestamp, tstz_ninf timestamptz, d_inf date,
    iv interval, tm time, b bytea, u uuid, inet_ inet,
    t_empty text, t_uni text, t_ctl text, t_long text, vc varchar(10), ch char(5),
    arr int[], arr2 numeric[][], tarr text[], earr int[],
    r int4range, nr numrange, tsr tstzrange, er int4range, mr int4multirange,
    m mood, p posint, c pair,
    j jsonb, jnum jsonb, jdeep jsonb, js json,
    gen numeric GENERATED ALWAYS AS (num * 2) STORED
);
SELECT rowcast.enable_capture('vals');
"""

ROW1 = """
INSERT INTO vals (id, num, n400, ntiny, nnan, ninf, f4, f4nan, f8, f8inf, f8ninf, f8tiny,
    i2, i8max, i8min, flag, ts, tstz, d, ts_inf, tstz_ninf, d_inf, iv, tm, b, u, inet_,
    t_empty, t_uni, t_ctl, vc, ch, arr, arr2, tarr, earr, r, nr, tsr, er, mr, m, p, c, j, jnum, js)
VALUES (1, $BIG, $N400, 1e-400, 'NaN', '-Infinity', 3.4028235e38, 'NaN', 1.7976931348623157e308,
    'Infinity', '-Infinity', 5e-324, -32768, 9223372036854775807, -9223372036854775808, true,
    '2026-12-03 10:11:12.123456', '2026-12-03 10:11:12.123456+05:30', '0001-01-01 BC', 'infinity',
    '-infinity', 'infinity', '1 year 2 mons -3 days 04:05:06.789', '23:59:59.999999',
    '\\x00ff0a22'::bytea, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '::ffff:1.2.3.4/128',
    '', 'é ☃ 𝄞 עִבְרִית e\u0301 \u2028\u2029 "q" \\ /', E'\\x01\\x07\\b\\t\\n\\x0b\\f\\r\\x1b\\x1f\\x7f',
    'x', 'ab', '{{1,-2},{3,NULL}}', '{{1.50,$BIG},{NaN,1e-400}}', '{"", "NULL", "a,b", "}"}', '{}',
    '[1,5)', '(,1e-400]', '[2026-01-01,infinity)', 'empty', '{[1,3), [5,7)}', 'happy ☀', 7,
    ROW($BIG, 'b', '{1,2}'), '{"a": [1, {"b": null}], "": "", "k\\"": true}',
    '{"big": $BIG, "tiny": 1e-400, "e": 1E+2, "z": -0.0, "arr": [1.50, 0.1, $N400]}',
    '{"kept": 1.0e2,  "as":   "written"}')
""".replace("$BIG", BIG).replace("$N400", N400)


async def pg_rows(conn: AConn) -> dict[int, dict[str, Any]]:
    """What Postgres says of each row: to_jsonb(t), parsed with the exact codec."""
    cur = await conn.execute("SELECT id, to_jsonb(t)::text FROM vals t ORDER BY id")
    return {int(id): parse(text)[0] for id, text in await cur.fetchall()}


def parse(text: str) -> tuple[Any, bool]:
    """Exactly, with the 1,200-deep jsonb (too deep for the codec, see jsonexact) as null."""
    return jsonexact.loads(text.replace(DEEP, "null")), DEEP in text


async def write(conn: AConn) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """Three inserts, an update and a delete; the rows as Postgres has them before and after."""
    await conn.execute(ROW1)
    await conn.execute(
        "INSERT INTO vals (id, num, f4, f4nan, f8, f8inf, i8max, t_uni, j, arr) VALUES "
        f"(2, {FLOAT_TWIN}, 1e-45, 'Infinity', -0.0, '-Infinity', 0, '', 'null', '{{NULL}}')"
    )
    await conn.execute(
        f"INSERT INTO vals (id, num, jdeep, t_long, jnum) VALUES (3, {BIG_PLUS}, %s, %s, '[{BIG}]')",
        (DEEP, LONG),
    )
    before = await pg_rows(conn)
    await conn.execute("UPDATE vals SET num = num + 1e-30, f8 = 'NaN', arr = '{}' WHERE id = 1")
    after = await pg_rows(conn)
    await conn.execute("DELETE FROM vals WHERE id = 3")
    return before, after


def check(changes: list[tuple[dict[str, Any], bool]], before: dict[int, Any], after: dict[int, Any]) -> None:
    """Unfiltered: every change, every value as Postgres has it."""
    assert [(c["op"], c["pk"]["id"]) for c, _ in changes] == [
        ("insert", 1),
        ("insert", 2),
        ("insert", 3),
        ("update", 1),
        ("delete", 3),
    ]
    (i1, _), (i2, _), (i3, deep3), (u1, _), (d3, deep_d3) = changes
    assert i1["row"] == before[1] and i2["row"] == before[2]
    assert i3["row"] == before[3] and deep3 and deep_d3  # the deep jsonb, verbatim
    assert u1["row"] == after[1]
    assert set(u1["old"]) >= {"num", "f8", "arr", "gen"}
    assert u1["old"] == {k: before[1][k] for k in u1["old"]}
    assert d3["row"] is None and d3["old"] == before[3]
    # The values that broke through floats, spelled out once.
    row = i1["row"]
    assert str(row["num"]) == BIG and isinstance(row["num"], Decimal)
    assert row["n400"] == int(N400) and row["ntiny"] == Decimal("1e-400")
    assert (row["nnan"], row["ninf"], row["f8inf"], row["f8ninf"]) == (
        "NaN",
        "-Infinity",
        "Infinity",
        "-Infinity",
    )
    assert row["i8max"] == 2**63 - 1 and row["i8min"] == -(2**63)
    assert (
        row["jnum"]["big"] == Decimal(BIG) and str(row["gen"]) == "2469135780.246913578024691357802469135780"
    )
    assert str(after[1]["num"]) == BIG_PLUS


def check_filtered(
    frames: list[tuple[dict[str, Any], bool]],
    before: dict[int, Any],
    after: dict[int, Any],
    columns: list[str],
    ids: list[int],
) -> None:
    """`num >= BIG` exactly (row 2 is float-equal and must not match), projected to `columns`.

    `ids`: the change ids of the five changes, in order (insert 1, 2, 3, update 1, delete 3).
    """
    keep = {"id", *columns}
    kinds = [(f["type"], f.get("op"), f["id"]) for f, _ in frames]
    assert kinds == [
        ("change", "insert", ids[0]),
        ("error", "insert", ids[2]),
        ("change", "update", ids[3]),
        ("error", "delete", ids[4]),
    ]
    (i1, _), (e3, deep), (u1, _), (d3, _) = frames
    assert not deep, "a filtered subscriber never gets the rows it cannot filter"
    assert i1["row"] == {k: v for k, v in before[1].items() if k in keep}
    assert u1["row"] == {k: v for k, v in after[1].items() if k in keep}
    assert u1["old"] == {k: before[1][k] for k in u1["old"]} and set(u1["old"]) <= keep
    for error in (e3, d3):
        assert error["code"] == "undecodable_change" and error["ref"] == "f"
        assert (error["schema"], error["table"]) == ("public", "vals") and "row" not in error


@contextlib.asynccontextmanager
async def notifier(db_url: str) -> AsyncIterator[str]:
    async with serve(create_app(settings_for(db_url))) as base:
        await wait_healthy(base)
        yield base


async def ws_frames(
    ws: aiohttp.ClientWebSocketResponse, want: Callable[[dict[str, Any]], bool], n: int
) -> list[tuple[dict[str, Any], bool]]:
    got: list[tuple[dict[str, Any], bool]] = []
    while len(got) < n:
        msg = await ws.receive()
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        frame, deep = parse(msg.data)
        if want(frame):
            got.append((frame, deep))
    return got


async def sse_frames(
    resp: aiohttp.ClientResponse, ready: asyncio.Event, n: int
) -> list[tuple[dict[str, Any], bool]]:
    got: list[tuple[dict[str, Any], bool]] = []
    kind = ""
    while len(got) < n:
        line = (await resp.content.readline()).decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            if kind == "subscribed":
                ready.set()
            elif kind == "change":
                got.append(parse(line[6:]))
    return got


async def long_poll(
    http: aiohttp.ClientSession, base: str, cursor: str, n: int
) -> list[tuple[dict[str, Any], bool]]:
    got: list[tuple[dict[str, Any], bool]] = []
    while len(got) < n:
        params = {"table": "vals", "cursor": cursor, "wait": "5", "limit": "1"}
        async with http.get(f"{base}/changes", params=params) as resp:
            assert resp.status == 200
            text = await resp.text()
        body, deep = parse(text)
        got += [(c, deep) for c in body["changes"]]
        cursor = body["cursor"]
    return got


async def client_changes(base: str, live: asyncio.Event, n: int) -> list[Change]:
    got: list[Change] = []
    status = lambda state, cursor: live.set() if state == "live" else None  # noqa: E731
    async with contextlib.aclosing(subscribe(base, "vals", on_status=status)) as changes:
        async for change in changes:
            got.append(change)
            if len(got) == n:
                return got
    return got


async def test_every_transport_delivers_every_value_as_postgres_has_it(db_url: str, aconn: AConn) -> None:
    await aconn.execute(SCHEMA)
    virtual = aconn.info.server_version >= 180000
    if virtual:  # Postgres 18: never computed for triggers; the capture computes it
        await aconn.execute("ALTER TABLE vals ADD COLUMN vgen numeric GENERATED ALWAYS AS (num * 3) VIRTUAL")
    columns = [
        "num",
        "n400",
        "ntiny",
        "f4",
        "f8",
        "f8inf",
        "i8max",
        "jnum",
        "t_uni",
        "t_ctl",
        "arr",
        "arr2",
        "c",
        "m",
        "p",
        "r",
        "ts_inf",
        "gen",
        *(["vgen"] if virtual else []),
    ]
    async with notifier(db_url) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/changes", params={"table": "vals"}) as resp:
            cursor = (await resp.json())["cursor"]
        async with (
            ws_connect(base) as plain,
            ws_connect(base) as filtered,
            http.get(f"{base}/sse", params={"table": "vals"}) as sse,
        ):
            await plain.subscribe(ref="p", table="vals")
            # The operand as the number's text (as rowcast.js sends what a double can't hold).
            await filtered.subscribe(ref="f", table="vals", columns=columns, where={"num": {"gte": BIG}})
            sse_ready, client_live = asyncio.Event(), asyncio.Event()
            sse_task = asyncio.create_task(sse_frames(sse, sse_ready, 5))
            client_task = asyncio.create_task(client_changes(base, client_live, 5))
            async with asyncio.timeout(10):
                await sse_ready.wait()
                await client_live.wait()
            try:
                before, after = await write(aconn)
                async with asyncio.timeout(20):
                    got_plain = await ws_frames(plain.ws, lambda f: f["type"] == "change", 5)
                    got_filtered = await ws_frames(filtered.ws, lambda f: f["type"] in ("change", "error"), 4)
                    got_sse = await sse_task
                    got_client = await client_task
                    got_poll = await long_poll(http, base, cursor, 5)
            finally:
                for task in (sse_task, client_task):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
    check(got_plain, before, after)
    check_filtered(got_filtered, before, after, columns, [f["id"] for f, _ in got_plain])
    check(got_sse, before, after)
    check(got_poll, before, after)
    # rowcast.client: exact numbers; the deep row comes marked, with the frame's text.
    as_frames = []
    for c in got_client:
        if c.error is None:
            as_frames.append(({"op": c.op, "pk": c.pk, "row": c.row, "old": c.old}, False))
        else:
            assert c.error == "undecodable_change" and c.raw is not None
            frame, deep = parse(c.raw)
            as_frames.append((frame, deep))
    check(as_frames, before, after)


@pytest.mark.parametrize(
    "pad",
    [0, 10_000],
    ids=["small-row", "10kB-row"],
)
async def test_deep_jsonb_never_stops_the_stream(db_url: str, aconn: AConn, pad: int) -> None:
    """Regression: a row holding jsonb nested 1,200 deep raised RecursionError in the notifier."""
    await aconn.execute("CREATE TABLE deep (id int PRIMARY KEY, j jsonb, pad text)")
    await aconn.execute("SELECT rowcast.enable_capture('deep')")
    async with notifier(db_url) as base, ws_connect(base) as plain, ws_connect(base) as filtered:
        await plain.subscribe(ref="p", table="deep")
        await filtered.subscribe(ref="f", table="deep", where={"id": {"gt": 0}})
        await aconn.execute("INSERT INTO deep VALUES (1, %s, %s)", (DEEP, "x" * pad))
        await aconn.execute("INSERT INTO deep VALUES (2, '[1.50]', '')")
        async with asyncio.timeout(10):
            got_plain = await ws_frames(plain.ws, lambda f: f["type"] == "change", 2)
            got_filtered = await ws_frames(filtered.ws, lambda f: f["type"] in ("change", "error"), 2)
        async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as resp:
            assert resp.status == 200
    assert got_plain[0][1] and got_plain[0][0]["row"]["j"] is None  # verbatim (DEEP, parsed as null)
    assert got_plain[1][0]["row"]["j"] == [Decimal("1.50")]
    assert got_filtered[0][0]["type"] == "error" and got_filtered[0][0]["code"] == "undecodable_change"
    assert got_filtered[1][0]["row"]["j"] == [Decimal("1.50")]


async def test_numeric_filter_operand_sent_as_a_json_number_compares_exactly(
    db_url: str, aconn: AConn
) -> None:
    await aconn.execute("CREATE TABLE prices (id int PRIMARY KEY, num numeric)")
    await aconn.execute("SELECT rowcast.enable_capture('prices')")
    async with notifier(db_url) as base, ws_connect(base) as client:
        await client.ws.send_str(
            jsonexact.dumps(
                {
                    "type": "subscribe",
                    "ref": "f",
                    "table": "prices",
                    "where": {"num": {"gte": jsonexact.loads(BIG)}},
                }
            )
        )
        await client.until(lambda f: f["type"] == "subscribed")
        await aconn.execute(f"INSERT INTO prices VALUES (1, {FLOAT_TWIN}), (2, {BIG})")
        async with asyncio.timeout(5):
            ((first, _),) = await ws_frames(client.ws, lambda f: f["type"] == "change", 1)
    assert first["pk"] == {"id": 2}, "1234567890.1234567 < 1234567890.123456789012345678901234567890"
