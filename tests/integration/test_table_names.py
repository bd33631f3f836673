"""Tables are schema and table, two fields: names with dots never collide (issue 13, finding 3).

Table `x.y` in schema `co` and table `y` in schema `co.x` were both read as `co.x.y`: one
subscription received the changes of both. Against a real Postgres and a real notifier.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import psycopg
import pytest
from rowcast.db import capture
from rowcast.notifier.app import create_app

from rowcast.errors import CaptureError
from tests.servers import serve, settings_for, ws_connect

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def dotted(conn: Conn) -> None:
    conn.execute('CREATE SCHEMA co; CREATE SCHEMA "co.x"')
    conn.execute('CREATE TABLE co."x.y" (id int PRIMARY KEY, v text)')
    conn.execute('CREATE TABLE "co.x".y (id int PRIMARY KEY, v text)')
    conn.execute("""SELECT rowcast.enable_capture('co."x.y"'), rowcast.enable_capture('"co.x".y')""")


async def test_dotted_names_name_one_table_each(db_url: str, conn: Conn, dotted: None) -> None:
    async with serve(create_app(settings_for(db_url))) as base, ws_connect(base) as client:
        assert (await client.subscribe("a", table='co."x.y"'))["type"] == "subscribed"
        assert (await client.subscribe("b", table="y", schema="co.x"))["type"] == "subscribed"
        conn.execute("""INSERT INTO co."x.y" VALUES (1, 'in co, table x.y')""")
        conn.execute("""INSERT INTO "co.x".y VALUES (2, 'in co.x, table y')""")
        conn.execute("""INSERT INTO co."x.y" VALUES (3, 'in co, table x.y')""")
        got: dict[str, list[Any]] = {"a": [], "b": []}
        while len(got["a"]) < 2 or len(got["b"]) < 1:
            frame = await client.recv(10)
            if frame["type"] == "change":
                got[frame["ref"]].append((frame["schema"], frame["table"], frame["row"]["id"]))
        assert got == {"a": [("co", "x.y", 1), ("co", "x.y", 3)], "b": [("co.x", "y", 2)]}
        # Nothing else arrives for either subscription (a marker change proves the stream is current).
        conn.execute("""INSERT INTO "co.x".y VALUES (4, 'marker')""")
        frame = await client.until(lambda f: f["type"] == "change")
        assert (frame["ref"], frame["row"]["id"]) == ("b", 4)


async def test_an_ambiguous_name_is_refused(db_url: str, dotted: None) -> None:
    async with serve(create_app(settings_for(db_url))) as base, ws_connect(base) as client:
        answer = await client.subscribe("s", table="co.x.y")
        assert answer["type"] == "error" and answer["code"] == "bad_table", answer
        assert "ambiguous" in answer["message"]
        bad = await client.subscribe("t", table='co."x.y', schema=None)
        assert bad["type"] == "error" and bad["code"] in ("bad_table", "bad_frame"), bad


async def test_long_poll_takes_schema_and_table_as_two_fields(db_url: str, conn: Conn, dotted: None) -> None:
    async with serve(create_app(settings_for(db_url))) as base, aiohttp.ClientSession() as http:
        params = {"schema": "co.x", "table": "y"}
        async with http.get(f"{base}/changes", params={**params, "wait": "0"}) as resp:
            cursor = (await resp.json())["cursor"]
        conn.execute("""INSERT INTO co."x.y" VALUES (1, 'other table')""")
        conn.execute("""INSERT INTO "co.x".y VALUES (2, 'this table')""")
        async with http.get(f"{base}/changes", params={**params, "cursor": cursor, "wait": "5"}) as resp:
            body = await resp.json()
        assert [(c["schema"], c["table"], c["row"]["id"]) for c in body["changes"]] == [("co.x", "y", 2)]
        async with http.get(f"{base}/changes", params={"table": "co.x.y", "wait": "0"}) as resp:
            assert resp.status == 400 and (await resp.json())["error"] == "bad_table"


def test_capture_commands_read_names_like_postgres(conn: Conn, dotted: None) -> None:
    [first] = capture.status(conn, 'co."x.y"')
    [second] = capture.status(conn, '"co.x".y')
    assert (first.schema, first.table, first.status) == ("co", "x.y", "ok")
    assert (second.schema, second.table, second.status) == ("co.x", "y", "ok")
    with pytest.raises(CaptureError, match="ambiguous"):
        capture.disable(conn, "co.x.y")
    assert "co" in capture.disable(conn, 'co."x.y"')
    assert capture.status(conn, 'co."x.y"')[0].status == "not_captured"
    assert capture.status(conn, '"co.x".y')[0].status == "ok"
