"""DDL on a captured table reaches subscribers without a restart (issue 13, schema changes).

Against a real Postgres and a real notifier: after ADD / RENAME / DROP COLUMN, a key column's
rename, a table's rename and DROP TABLE, what the notifier accepts and what subscribers are told.
On the previous code filters on new names got `unknown_column` until a restart, a filter on a
dropped column was accepted and never matched, a renamed table's subscribers got nothing and no
frame, and DROP TABLE emitted nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import psycopg
import pytest
from rowcast.notifier.app import create_app

from tests.servers import WsClient, serve, settings_for, ws_connect

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def shelves(conn: Conn) -> None:
    conn.execute("CREATE TABLE shelves (id int PRIMARY KEY, label text, room text)")
    conn.execute("SELECT rowcast.enable_capture('shelves')")


@pytest.fixture
async def base(db_url: str, shelves: None) -> AsyncIterator[str]:
    async with serve(create_app(settings_for(db_url, poll_interval=0.1))) as url:
        yield url


async def next_of(client: WsClient, kinds: tuple[str, ...], ref: str | None = None) -> dict[str, Any]:
    return await client.until(lambda f: f["type"] in kinds and (ref is None or f.get("ref") == ref), 10)


async def test_add_column_needs_no_restart(base: str, conn: Conn) -> None:
    async with ws_connect(base) as client:
        await client.subscribe("all", table="shelves")
        conn.execute("ALTER TABLE shelves ADD COLUMN floor int")
        news = await next_of(client, ("schema_changed",))
        assert news["ref"] == "all" and [c["name"] for c in news["columns"]] == [
            "id",
            "label",
            "room",
            "floor",
        ]
        assert (
            news["columns"][3]["type"] == "integer" and news["pk"] == ["id"] and news["renamed_from"] is None
        )
        # The new column can be filtered on at once, and changes carry it.
        answer = await client.subscribe("floor", table="shelves", where={"floor": {"eq": 2}})
        assert answer["type"] == "subscribed", answer
        conn.execute("INSERT INTO shelves VALUES (1, 'a', 'hall', 2), (2, 'b', 'hall', 3)")
        got = [await next_of(client, ("change",)) for _ in range(3)]
        assert sorted((f["ref"], f["row"]["id"]) for f in got) == [("all", 1), ("all", 2), ("floor", 1)]


async def test_a_filter_on_a_renamed_or_dropped_column_ends_with_an_error(base: str, conn: Conn) -> None:
    async with ws_connect(base) as client:
        await client.subscribe("label", table="shelves", where={"label": {"eq": "a"}})
        await client.subscribe("room", table="shelves", where={"room": {"eq": "hall"}})
        await client.subscribe("plain", table="shelves")
        conn.execute("ALTER TABLE shelves RENAME COLUMN label TO title")
        error = await next_of(client, ("error",), "label")
        assert error["code"] == "unknown_column" and "label" in error["message"]
        conn.execute("ALTER TABLE shelves DROP COLUMN room")
        error = await next_of(client, ("error",), "room")
        assert error["code"] == "unknown_column"
        # The new names are known at once; the old ones are refused rather than never matching.
        assert (await client.subscribe("room2", table="shelves", where={"room": {"eq": "x"}}))["code"] == (
            "unknown_column"
        )
        assert (await client.subscribe("title", table="shelves", where={"title": {"eq": "a"}}))["type"] == (
            "subscribed"
        )
        conn.execute("INSERT INTO shelves VALUES (1, 'a')")
        got = [await next_of(client, ("change",)) for _ in range(2)]
        assert sorted(f["ref"] for f in got) == ["plain", "title"]
        assert got[0]["row"] == {"id": 1, "title": "a"}
        # The refs of the ended subscriptions are free again.
        assert (await client.subscribe("label", table="shelves"))["type"] == "subscribed"


async def test_renaming_the_key_column_never_gives_a_null_key(base: str, conn: Conn) -> None:
    conn.execute("INSERT INTO shelves VALUES (7, 'k', 'hall')")
    async with ws_connect(base) as client:
        await client.subscribe("s", table="shelves")
        conn.execute("ALTER TABLE shelves RENAME COLUMN id TO shelf_id")
        news = await next_of(client, ("schema_changed",))
        assert news["pk"] == ["shelf_id"]
        conn.execute("UPDATE shelves SET label = 'k2' WHERE shelf_id = 7")
        conn.execute("DELETE FROM shelves WHERE shelf_id = 7")
        update, delete = await next_of(client, ("change",)), await next_of(client, ("change",))
        assert (update["op"], update["pk"]) == ("update", {"shelf_id": 7})
        assert (delete["op"], delete["pk"]) == ("delete", {"shelf_id": 7})


async def test_a_renamed_table_is_followed_and_its_new_name_works_at_once(base: str, conn: Conn) -> None:
    async with ws_connect(base) as client:
        await client.subscribe("s", table="shelves", where={"room": {"eq": "hall"}})
        conn.execute("ALTER TABLE shelves RENAME TO racks")
        news = await next_of(client, ("schema_changed",))
        assert (news["table"], news["renamed_from"]) == ("racks", {"schema": "public", "table": "shelves"})
        conn.execute("INSERT INTO racks VALUES (1, 'a', 'hall'), (2, 'b', 'cellar')")
        change = await next_of(client, ("change",))
        assert (change["ref"], change["table"], change["row"]["id"]) == ("s", "racks", 1)
        assert (await client.subscribe("new", table="racks"))["type"] == "subscribed"
        assert (await client.subscribe("old", table="shelves"))["code"] == "unknown_table"


async def test_a_dropped_table_asks_for_a_resync(base: str, conn: Conn) -> None:
    async with ws_connect(base) as client:
        await client.subscribe("s", table="shelves")
        conn.execute("DROP TABLE shelves")
        frame = await next_of(client, ("resync_required",))
        assert (frame["ref"], frame["reason"]) == ("s", "table_dropped")
        assert (await client.subscribe("again", table="shelves"))["code"] == "unknown_table"
        assert (await client.subscribe("s", table="books"))["type"] == "subscribed"  # ref is free


async def test_long_poll_lists_ddl_in_order_with_the_changes(base: str, conn: Conn) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/changes", params={"table": "shelves", "wait": "0"}) as resp:
            cursor = (await resp.json())["cursor"]
        conn.execute("INSERT INTO shelves VALUES (1, 'a', 'hall')")
        conn.execute("ALTER TABLE shelves ADD COLUMN floor int")
        conn.execute("INSERT INTO shelves VALUES (2, 'b', 'hall', 1)")
        params = {"table": "shelves", "cursor": cursor, "wait": "5"}
        async with http.get(f"{base}/changes", params=params) as resp:
            body = await resp.json()
        assert [(c["op"], (c.get("row") or {}).get("id")) for c in body["changes"]] == [
            ("insert", 1),
            ("schema", None),
            ("insert", 2),
        ]
        assert [c["name"] for c in body["changes"][1]["columns"]][-1] == "floor"
        assert "actor" not in body["changes"][1]
