"""Virtual generated columns (Postgres 18) carry their values (issue 13, exact values).

Postgres never computes them for triggers: NEW and OLD hold null, so every event had null there.
The row trigger now computes them from the row; the values equal what a SELECT returns.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from rowcast.notifier.app import create_app

from tests.servers import serve, settings_for, ws_connect

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def people(conn: Conn) -> None:
    if conn.info.server_version < 180000:
        pytest.skip("virtual generated columns need Postgres 18")
    conn.execute(
        "CREATE TABLE people (id int PRIMARY KEY, cm numeric, name text, "
        "inches numeric GENERATED ALWAYS AS (round(cm / 2.54, 3)) VIRTUAL, "
        "shout text GENERATED ALWAYS AS (upper(name) || '!') VIRTUAL, "
        "stored int GENERATED ALWAYS AS (id * 10) STORED)"
    )
    conn.execute("SELECT rowcast.enable_capture('people')")


def logged(conn: Conn) -> list[tuple[str, Any, Any]]:
    rows = conn.execute(
        "SELECT op, \"row\", old FROM rowcast.changes WHERE table_name = 'people' AND op <> 'schema' ORDER BY id"
    ).fetchall()
    return [(str(op), row, old) for op, row, old in rows]


def selected(conn: Conn, id_: int) -> dict[str, Any]:
    row = conn.execute("SELECT to_jsonb(p) FROM people p WHERE id = %s", (id_,)).fetchone()
    assert row is not None
    return dict(row[0])


def test_virtual_columns_are_logged_with_their_values(conn: Conn, people: None) -> None:
    conn.execute("INSERT INTO people (id, cm, name) VALUES (1, 180, 'ada')")
    inserted = selected(conn, 1)
    conn.execute("UPDATE people SET cm = 100, name = 'bo' WHERE id = 1")
    updated = selected(conn, 1)
    conn.execute("DELETE FROM people WHERE id = 1")
    (i_op, i_row, _), (u_op, u_row, u_old), (d_op, _, d_old) = logged(conn)
    assert i_row == inserted and inserted["inches"] is not None and inserted["shout"] == "ADA!"
    assert u_row == updated
    # `old` of an update holds the changed columns' old values, the virtual ones included.
    assert u_old == {"cm": 180, "name": "ada", "inches": inserted["inches"], "shout": "ADA!"}
    assert d_old == updated
    assert (i_op, u_op, d_op) == ("insert", "update", "delete")


def test_a_virtual_column_added_later_is_carried_too(conn: Conn, people: None) -> None:
    conn.execute("ALTER TABLE people ADD COLUMN metres numeric GENERATED ALWAYS AS (cm / 100) VIRTUAL")
    conn.execute("INSERT INTO people (id, cm, name) VALUES (2, 150, 'cy')")
    [(_, row, _)] = logged(conn)
    assert row == selected(conn, 2) and row["metres"] is not None


async def test_subscribers_get_the_values_and_can_filter_on_them(
    db_url: str, conn: Conn, people: None
) -> None:
    async with serve(create_app(settings_for(db_url))) as base, ws_connect(base) as client:
        answer = await client.subscribe("tall", table="people", where={"inches": {"gt": 70}})
        assert answer["type"] == "subscribed", answer
        conn.execute("INSERT INTO people (id, cm, name) VALUES (3, 150, 'short'), (4, 190, 'tall')")
        frame = await client.until(lambda f: f["type"] == "change")
        assert frame["row"]["name"] == "tall" and frame["row"] == selected(conn, 4)
