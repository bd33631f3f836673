"""Bulk statements captured per statement (issue 19, cheaper capture), with the same events.

A plain table that asks for it (rowcast.capture_per_statement) has its INSERT and DELETE logged
from the statement's transition table in one set-based INSERT (rowcast.capture_rows()); UPDATE
stays a row trigger. The log rows must be what the row trigger writes: compared here with a
partitioned twin, which is always captured per row.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from rowcast.db import capture, migrate

from tests.pg import Server

Conn = psycopg.Connection[tuple[Any, ...]]


def log(conn: Conn, table: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT op, pk, \"row\", old FROM rowcast.changes WHERE table_name = %s AND op <> 'schema' ORDER BY id",
        (table,),
    ).fetchall()


@pytest.fixture
def twins(conn: Conn) -> None:
    # Column names that a careless dynamic statement would take for its own aliases.
    columns = "id int, r int4range, j jsonb, k text, s text, t text, v numeric"
    conn.execute(f"CREATE TABLE flat ({columns}, PRIMARY KEY (id))")
    conn.execute(f"CREATE TABLE parted ({columns}, PRIMARY KEY (id)) PARTITION BY RANGE (id)")
    conn.execute("CREATE TABLE parted_all PARTITION OF parted FOR VALUES FROM (MINVALUE) TO (MAXVALUE)")
    conn.execute("SELECT rowcast.enable_capture('flat'), rowcast.enable_capture('parted')")
    conn.execute("SELECT rowcast.capture_per_statement('flat')")


def test_plain_tables_get_statement_triggers_and_partitioned_ones_keep_the_row_trigger(
    conn: Conn, twins: None
) -> None:
    rows = conn.execute(
        "SELECT tgrelid::regclass::text, tgname, tgfoid::regproc::text FROM pg_trigger "
        "WHERE tgname LIKE 'rowcast%%' AND tgparentid = 0 ORDER BY 1, 2"
    ).fetchall()
    assert [r for r in rows if r[0] == "flat"] == [
        ("flat", "rowcast_capture_delete_v4", "rowcast.capture_rows"),
        ("flat", "rowcast_capture_insert_v4", "rowcast.capture_rows"),
        ("flat", "rowcast_capture_truncate_v3", "rowcast.capture_v3"),
        ("flat", "rowcast_capture_v3", "rowcast.capture_v3"),
    ]
    assert [r[1] for r in rows if r[0] == "parted"] == ["rowcast_capture_truncate_v3", "rowcast_capture_v3"]
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="captured per row"):
        conn.execute("SELECT rowcast.capture_per_statement('parted')")
    # Back to per row, and enable_capture always installs per-row capture.
    conn.execute("SELECT rowcast.capture_per_statement('flat', false)")
    conn.execute("CREATE TABLE other (id int PRIMARY KEY)")
    conn.execute("SELECT rowcast.enable_capture('other')")
    rows = conn.execute(
        "SELECT tgrelid::regclass::text, tgname FROM pg_trigger "
        "WHERE tgname LIKE 'rowcast%%' AND tgparentid = 0 AND tgrelid IN ('flat'::regclass, 'other'::regclass) ORDER BY 1, 2"
    ).fetchall()
    assert rows == [
        ("flat", "rowcast_capture_truncate_v3"),
        ("flat", "rowcast_capture_v3"),
        ("other", "rowcast_capture_truncate_v3"),
        ("other", "rowcast_capture_v3"),
    ]
    assert {s.status for s in capture.status(conn)} <= {"ok", "ddl_untracked"}


def test_bulk_statements_log_what_the_row_trigger_logs(conn: Conn, twins: None) -> None:
    for table in ("flat", "parted"):
        conn.execute(
            f"INSERT INTO {table} SELECT g, int4range(g, g + 2), jsonb_build_object('n', g, 'a', ARRAY[g]), "
            f"'k' || g, NULL, 't', g / 3.0 FROM generate_series(1, 500) g"
        )
        with conn.cursor().copy(f"COPY {table} (id, k) FROM STDIN") as copy:
            for i in range(501, 601):
                copy.write_row((i, f"copied {i}"))
        conn.execute(
            f"INSERT INTO {table} (id, k) VALUES (1, 'conflict'), (700, 'new') "
            "ON CONFLICT (id) DO UPDATE SET k = excluded.k"
        )
        conn.execute(f"UPDATE {table} SET s = 'updated' WHERE id % 50 = 0")
        conn.execute(f"INSERT INTO {table} SELECT * FROM {table} WHERE false")  # nothing
        conn.execute(f"DELETE FROM {table} WHERE id > 450")
    flat, parted = log(conn, "flat"), log(conn, "parted")
    assert len(flat) == 500 + 100 + 2 + 13 + 151  # inserts, COPY, upsert, updates, deletes
    assert flat == parted
    op, pk, row, old = flat[0]
    assert (op, pk, old) == ("insert", {"id": 1}, None)
    assert (row["r"], row["j"], row["k"], row["t"]) == ("[1,3)", {"a": [1], "n": 1}, "k1", "t")


def test_a_rolled_back_savepoint_and_an_empty_statement_log_nothing(conn: Conn, twins: None) -> None:
    with conn.transaction():
        conn.execute("INSERT INTO flat (id) VALUES (1)")
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute("INSERT INTO flat (id) SELECT 2 UNION ALL SELECT 3")
            conn.execute("INSERT INTO flat (id) VALUES (3)")
        conn.execute("DELETE FROM flat WHERE id = 99")
    assert [(op, pk) for op, pk, _, _ in log(conn, "flat")] == [("insert", {"id": 1})]


def test_a_bulk_transaction_rings_once_at_commit(db_url: str, conn: Conn, twins: None) -> None:
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN rowcast")
        with conn.transaction():
            conn.execute("INSERT INTO flat (id) SELECT g FROM generate_series(1, 1000) g")
            conn.execute("DELETE FROM flat WHERE id <= 10")
            conn.execute("INSERT INTO parted (id) SELECT g FROM generate_series(1, 10) g")
        rings = list(listener.notifies(timeout=1.0))
    assert [(n.channel, n.payload) for n in rings] == [("rowcast", "")]


@pytest.mark.parametrize("mode", ["notify", "coalesced"])
def test_a_bulk_statement_queues_one_doorbell_call_not_one_per_row(conn: Conn, twins: None, mode: str) -> None:
    """The doorbell's constraint trigger decides per log row, as each is written, whether to queue
    rowcast.ring() for COMMIT. A set-based INSERT marked the transaction rung only after its last
    row, so a 1,000-row statement queued 1,000 ring() calls (each a NOTIFY, in coalesced mode a
    doorbell UPDATE): a third of the bulk statement's cost, and memory in the trigger queue."""
    conn.execute("SELECT rowcast.set_wake_mode(%s)", (mode,))
    conn.execute("SET track_functions = 'pl'")
    with conn.transaction():
        conn.execute("INSERT INTO flat (id) SELECT g FROM generate_series(1, 1000) g")
        conn.execute("DELETE FROM flat WHERE id <= 500")
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # fire the queued ring() calls now, in this transaction
        row = conn.execute("SELECT pg_stat_get_xact_function_calls('rowcast.ring'::regproc)").fetchone()
    assert row == (1,)
    assert [op for op, _, _, _ in log(conn, "flat")] == ["insert"] * 1000 + ["delete"] * 500
    # In statement order: the first row logged is the statement's first row.
    assert [pk["id"] for _, pk, _, _ in log(conn, "flat")][:3] == [1, 2, 3]


def test_virtual_columns_are_computed_for_bulk_statements(conn: Conn) -> None:
    if conn.info.server_version < 180000:
        pytest.skip("virtual generated columns need Postgres 18")
    conn.execute(
        "CREATE TABLE gen (id int PRIMARY KEY, cm numeric, v numeric GENERATED ALWAYS AS (cm * 10) VIRTUAL)"
    )
    conn.execute("SELECT rowcast.enable_capture('gen'), rowcast.capture_per_statement('gen')")
    conn.execute("INSERT INTO gen (id, cm) SELECT g, g FROM generate_series(1, 3) g")
    conn.execute("DELETE FROM gen WHERE id = 3")
    got = [(op, (row or old)["v"]) for op, _, row, old in log(conn, "gen")]
    assert got == [("insert", 10), ("insert", 20), ("insert", 30), ("delete", 30)]


def test_upgrade_to_v5_and_back_restores_v4s_capture_rows(pg_server: Server) -> None:
    definition = "SELECT pg_get_functiondef('rowcast.capture_rows'::regproc), (SELECT proowner::regrole::text FROM pg_proc WHERE oid = 'rowcast.capture_rows'::regproc)"
    with pg_server.database(template=None) as url:
        migrate.upgrade(url, "0007")
        with psycopg.connect(url, autocommit=True) as conn:
            v4 = conn.execute(definition).fetchone()
        migrate.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            v5 = conn.execute(definition).fetchone()
            assert v5 is not None and v4 is not None and v5 != v4 and v5[1] == v4[1] == "rowcast_capture"
        migrate.downgrade(url, "0007")
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute(definition).fetchone() == v4


def test_a_key_column_renamed_while_ddl_was_untracked_still_gives_every_row_its_key(
    conn: Conn, twins: None
) -> None:
    """The registered key names a column that is gone: the key comes from the catalog, as the
    row trigger does it (never null, never the registered name)."""
    conn.execute("ALTER EVENT TRIGGER rowcast_ddl_v4 DISABLE")
    try:
        for table in ("flat", "parted"):
            conn.execute(f"ALTER TABLE {table} RENAME COLUMN id TO ident")
            conn.execute(f"INSERT INTO {table} (ident, k) SELECT g, 'k' || g FROM generate_series(1, 3) g")
            conn.execute(f"DELETE FROM {table} WHERE ident = 2")
    finally:
        conn.execute("ALTER EVENT TRIGGER rowcast_ddl_v4 ENABLE")
    flat = [(op, pk) for op, pk, _, _ in log(conn, "flat")]
    assert flat == [(op, pk) for op, pk, _, _ in log(conn, "parted")]
    assert flat == [("insert", {"ident": 1}), ("insert", {"ident": 2}), ("insert", {"ident": 3}), ("delete", {"ident": 2})]
