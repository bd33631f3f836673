"""Least-privilege roles created by the migrations."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import psycopg
import pytest
from rowcast.notifier.app import create_app

from tests.pg import ROLE_PASSWORD, as_role
from tests.servers import serve, settings_for, wait_healthy, wait_prunable, wait_until, ws_connect

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def login(conn: Conn, db_url: str) -> Iterator[Any]:
    """Make a login role that is a member of the given rowcast role; yields a URL factory."""
    made: list[str] = []

    def make(member_of: str) -> str:
        name = f"rc_{member_of[8:]}_{uuid.uuid4().hex[:6]}"
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{ROLE_PASSWORD}' IN ROLE {member_of}")
        made.append(name)
        return as_role(db_url, name)

    yield make
    for name in made:
        conn.execute(f"DROP OWNED BY {name}")
        conn.execute(f"DROP ROLE {name}")


def test_app_role_writes_books_but_cannot_touch_the_change_log(login: Any, conn: Conn) -> None:
    with psycopg.connect(login("rowcast_app"), autocommit=True) as app:
        app.execute("INSERT INTO books (title) VALUES ('by the app role')")
        app.execute("UPDATE books SET num_pages = 3")
        for statement in (
            "SELECT * FROM rowcast.changes",
            "INSERT INTO rowcast.changes (schema_name, table_name, op) VALUES ('public', 'books', 'insert')",
            "DELETE FROM rowcast.changes",
            "SELECT rowcast.enable_capture('books')",
            "SELECT rowcast.set_wake_mode('coalesced')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(statement)
    ops = conn.execute("SELECT op FROM rowcast.changes ORDER BY id").fetchall()
    assert ops == [("insert",), ("update",)]  # the trigger still logged the app's writes


def test_notifier_role_reads_the_log_but_not_the_tables(login: Any) -> None:
    with psycopg.connect(login("rowcast_notifier"), autocommit=True) as notifier:
        notifier.execute("SELECT count(*) FROM rowcast.changes")
        notifier.execute("LISTEN rowcast")
        for statement in (
            "SELECT * FROM books",
            "INSERT INTO books (title) VALUES ('no')",
            "DELETE FROM rowcast.changes",
            "INSERT INTO rowcast.changes (schema_name, table_name, op) VALUES ('public', 'books', 'insert')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                notifier.execute(statement)


@pytest.mark.parametrize("mode", ["notify", "coalesced"])
async def test_notifier_runs_end_to_end_as_rowcast_notifier(login: Any, conn: Conn, mode: str) -> None:
    conn.execute("SELECT rowcast.set_wake_mode(%s)", (mode,))
    url = login("rowcast_notifier")
    async with serve(create_app(settings_for(url))) as base:
        await wait_healthy(base)
        async with ws_connect(base) as client:
            sub = await client.subscribe()
            await asyncio.to_thread(
                conn.execute, "INSERT INTO books (title) VALUES ('seen by a least-privilege notifier')"
            )
            change = await client.until(lambda f: f["type"] == "change")
            await client.subscribe(ref="replay", cursor=sub["cursor"])
            replayed = await client.until(lambda f: f["type"] == "change" and f["ref"] == "replay")
    assert change["row"]["title"] == replayed["row"]["title"] == "seen by a least-privilege notifier"


async def test_a_least_privilege_notifier_writes_its_heartbeat_and_serves_status(
    login: Any, conn: Conn
) -> None:
    """Issue 17: rowcast_notifier may keep its row in rowcast.notifiers and read table_activity;
    the app role learns nothing about the log through either."""
    conn.execute("INSERT INTO books (title) VALUES ('counted')")
    async with serve(create_app(settings_for(login("rowcast_notifier")))) as base:
        await wait_healthy(base)

        async def status() -> dict[str, Any] | None:
            async with aiohttp.ClientSession() as http, http.get(base + "/status.json") as resp:
                assert resp.status == 200, await resp.text()
                body: dict[str, Any] = await resp.json()
            return body if body["notifiers"] else None

        body = await wait_until(status, timeout=10, interval=0.3)
    assert [t["log_rows"] for t in body["tables"] if t["table"] == "public.books"] == [1]
    assert body["notifiers"][0]["id"] == body["self"]
    with psycopg.connect(login("rowcast_app"), autocommit=True) as app:
        for statement in ("SELECT * FROM rowcast.table_activity()", "SELECT * FROM rowcast.notifiers"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(statement)


async def test_retention_prunes_once_per_round_and_a_least_privilege_role_may_not(
    login: Any, conn: Conn, db_url: str
) -> None:
    from psycopg_pool import AsyncConnectionPool
    from rowcast.notifier.retention import prune_once

    conn.execute("INSERT INTO books (title) VALUES ('old'), ('older')")
    conn.execute("UPDATE rowcast.changes SET at = now() - interval '2 days'")
    wait_prunable(conn)
    async with AsyncConnectionPool(db_url, open=False, kwargs={"autocommit": True}) as pool:
        assert await prune_once(pool, 24 * 3600) == 2
    assert conn.execute("SELECT count(*) FROM rowcast.changes").fetchone() == (0,)
    async with AsyncConnectionPool(
        login("rowcast_notifier"), open=False, kwargs={"autocommit": True}
    ) as pool:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await prune_once(pool, 24 * 3600)
