"""Capture triggers: every write lands in rowcast.changes; channel rowcast only hears a data-free doorbell."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from rowcast.db import capture, migrate

from rowcast.embedded import binary
from rowcast.errors import CaptureError
from tests.pg import ROLE_PASSWORD, Server, as_role
from tests.servers import wait_prunable

Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def listener(db_url: str) -> Iterator[Conn]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("LISTEN rowcast")
        yield conn


def notifications(conn: Conn, timeout: float = 1.0) -> list[str]:
    """The payload of every notification that arrives until `timeout` passes."""
    return [n.payload for n in conn.notifies(timeout=timeout)]


def log(conn: Conn) -> list[dict[str, Any]]:
    cur = conn.execute(
        "SELECT id, xid::text, op, schema_name, table_name, pk, row, old, db_user, application_name, "
        "actor, request_id FROM rowcast.changes ORDER BY id"
    )
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def test_insert_update_delete_each_log_a_row_and_notify_the_event(conn: Conn, listener: Conn) -> None:
    conn.execute("INSERT INTO books (title, author, num_pages) VALUES ('Dune', 'Herbert', 412)")
    conn.execute("UPDATE books SET num_pages = 500 WHERE title = 'Dune'")
    conn.execute("DELETE FROM books WHERE title = 'Dune'")

    rows = log(conn)
    assert [r["op"] for r in rows] == ["insert", "update", "delete"]
    ins, upd, dele = rows
    book_id = ins["row"]["id"]
    assert ins["pk"] == {"id": book_id} and ins["old"] is None
    assert ins["row"]["title"] == "Dune" and ins["row"]["version"] == 1
    # Update: the new row, and the old values of only the changed columns (version bumped too).
    assert upd["row"]["num_pages"] == 500 and upd["row"]["version"] == 2
    assert upd["old"]["num_pages"] == 412 and upd["old"]["version"] == 1
    assert "title" not in upd["old"]
    assert dele["row"] is None and dele["old"]["title"] == "Dune"
    assert all(r["table_name"] == "books" and r["schema_name"] == "public" for r in rows)

    # One data-free wake-up per transaction: no row, no id, no table on the public channel.
    assert notifications(listener) == ["", "", ""]


def test_truncate_is_captured_by_a_statement_trigger(conn: Conn, listener: Conn) -> None:
    conn.execute("INSERT INTO books (title) SELECT 'b' || g FROM generate_series(1, 3) g")
    conn.execute("TRUNCATE books")
    assert [r["op"] for r in log(conn)] == ["insert", "insert", "insert", "truncate"]
    assert notifications(listener) == ["", ""]
    last = log(conn)[-1]
    assert last["op"] == "truncate" and last["pk"] is None and last["row"] is None


def test_multi_row_statements_log_one_change_per_row(conn: Conn, listener: Conn) -> None:
    conn.execute("INSERT INTO books (title) SELECT 'b' || g FROM generate_series(1, 50) g")
    conn.execute("UPDATE books SET author = 'anon'")
    rows = log(conn)
    assert len(rows) == 100
    assert len({r["xid"] for r in rows[:50]}) == 1
    assert sorted(r["pk"]["id"] for r in rows[:50]) == sorted(r["pk"]["id"] for r in rows[50:])
    assert notifications(listener) == ["", ""]  # folded: one per transaction


def test_rolled_back_transaction_produces_nothing(db_url: str, conn: Conn, listener: Conn) -> None:
    with psycopg.connect(db_url) as writer:
        writer.execute("INSERT INTO books (title) VALUES ('ghost')")
        writer.rollback()
    assert log(conn) == []
    assert notifications(listener, 0.5) == []


def test_rolled_back_savepoint_produces_nothing_but_the_rest_commits(
    db_url: str, conn: Conn, listener: Conn
) -> None:
    with psycopg.connect(db_url) as writer:
        with writer.transaction():
            writer.execute("INSERT INTO books (title) VALUES ('kept')")
            try:
                with writer.transaction():
                    writer.execute("INSERT INTO books (title) VALUES ('ghost')")
                    raise RuntimeError("roll back the savepoint")
            except RuntimeError:
                pass
    assert [r["row"]["title"] for r in log(conn)] == ["kept"]
    assert notifications(listener) == [""]


@pytest.fixture
def notes(conn: Conn) -> str:
    conn.execute("CREATE TABLE notes (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text)")
    capture.enable(conn, "notes")
    return "notes"


def test_one_megabyte_row_commits_and_rings_only_an_empty_doorbell(
    conn: Conn, listener: Conn, notes: str
) -> None:
    big = "x" * (1024 * 1024)
    conn.execute("INSERT INTO notes (body) VALUES (%s)", (big,))
    assert notifications(listener) == [""]
    (row,) = log(conn)
    assert row["row"]["body"] == big


def test_composite_primary_keys_are_captured(conn: Conn, listener: Conn) -> None:
    conn.execute("CREATE TABLE shelf (room text, slot int, label text, PRIMARY KEY (room, slot))")
    assert "primary key: room, slot" in capture.enable(conn, "shelf")
    conn.execute("INSERT INTO shelf VALUES ('a', 1, 'x')")
    conn.execute("UPDATE shelf SET slot = 2 WHERE room = 'a'")
    ins, upd = log(conn)
    assert ins["pk"] == {"room": "a", "slot": 1}
    # A key change: pk is the new key, old holds the old key's column.
    assert upd["pk"] == {"room": "a", "slot": 2} and upd["old"] == {"slot": 1}


def test_table_without_primary_key_is_refused_with_a_clear_message(conn: Conn) -> None:
    conn.execute("CREATE TABLE loose (x int)")
    with pytest.raises(CaptureError, match="has no primary key"):
        capture.enable(conn, "loose")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="no primary key"):
        conn.execute("SELECT rowcast.enable_capture('loose')")


def test_actor_and_request_id_come_from_set_local(db_url: str, conn: Conn, listener: Conn) -> None:
    with psycopg.connect(db_url, application_name="api") as writer:
        with writer.transaction():
            writer.execute("SET LOCAL rowcast.actor = 'alice'")
            writer.execute("SET LOCAL rowcast.request_id = 'req-1'")
            writer.execute("INSERT INTO books (title) VALUES ('mine')")
        writer.execute("INSERT INTO books (title) VALUES ('after')")
        writer.commit()
    first, second = log(conn)
    assert (first["actor"], first["request_id"], first["application_name"]) == ("alice", "req-1", "api")
    assert (second["actor"], second["request_id"]) == (None, None)
    assert notifications(listener) == ["", ""]


def test_write_from_the_real_psql_binary_is_captured_and_attributed_to_psql(db_url: str, conn: Conn) -> None:
    result = subprocess.run(
        [
            str(binary("psql")),
            db_url,
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "INSERT INTO books (title) VALUES ('typed by a DBA'); UPDATE books SET num_pages = 9",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "PGAPPNAME"},
    )
    assert result.returncode == 0, result.stderr
    ins, upd = log(conn)
    assert ins["application_name"] == "psql" and ins["db_user"] == "postgres"
    assert ins["actor"] is None
    # The BEFORE UPDATE trigger bumps the version for every writer, psql included.
    assert upd["row"]["version"] == 2


def test_writers_need_no_privilege_on_the_change_log(db_url: str, conn: Conn) -> None:
    role = "rowcast_test_writer"
    conn.execute(f"DROP ROLE IF EXISTS {role}")
    conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{ROLE_PASSWORD}'")
    try:
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        conn.execute(f"GRANT INSERT, SELECT ON books TO {role}")
        with psycopg.connect(as_role(db_url, role), autocommit=True) as writer:
            writer.execute("INSERT INTO books (title) VALUES ('least privilege')")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                writer.execute("SELECT * FROM rowcast.changes")
        assert log(conn)[0]["db_user"] == role
    finally:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def test_capture_status_reports_a_dropped_trigger_and_enable_repairs_it(conn: Conn) -> None:
    assert {(s.table, s.status) for s in capture.status(conn)} == {("books", "ok"), ("authors", "ok")}
    conn.execute("DROP TRIGGER rowcast_capture_v3 ON books")
    (books,) = capture.status(conn, "books")
    assert books.status == "missing" and "rowcast_capture_v3" in books.detail
    capture.enable(conn, "books")
    assert capture.status(conn, "books")[0].ok


def test_capture_status_follows_a_changed_primary_key_and_reports_a_dropped_one(conn: Conn) -> None:
    conn.execute("CREATE TABLE k (a int PRIMARY KEY, b int NOT NULL)")
    capture.enable(conn, "k")
    # DDL tracking (capture_v4.sql) moves the registry to the new key.
    conn.execute("ALTER TABLE k DROP CONSTRAINT k_pkey, ADD PRIMARY KEY (a, b)")
    (k,) = capture.status(conn, "k")
    assert k.ok and k.detail == "capture v4 on (a, b)"
    conn.execute("ALTER TABLE k DROP CONSTRAINT k_pkey")
    (k,) = capture.status(conn, "k")
    assert (k.status, k.detail) == (
        "key_changed",
        "the table has no primary key now (registered as (a, b)): add one",
    )


def test_disable_capture_stops_logging(conn: Conn) -> None:
    capture.disable(conn, "books")
    conn.execute("INSERT INTO books (title) VALUES ('quiet')")
    assert log(conn) == []
    assert capture.status(conn, "books")[0].status == "not_captured"


def test_prune_removes_old_rows_and_records_the_highest_xid(conn: Conn) -> None:
    conn.execute("INSERT INTO books (title) VALUES ('old')")
    conn.execute("UPDATE rowcast.changes SET at = now() - interval '2 days'")
    conn.execute("INSERT INTO books (title) VALUES ('new')")
    old_xid = log(conn)[0]["xid"]
    wait_prunable(conn)
    removed, pruned = capture.prune(conn, 24 * 3600)
    assert removed == 1 and pruned == old_xid
    assert [r["row"]["title"] for r in log(conn)] == ["new"]


def test_alembic_upgrade_downgrade_upgrade(pg_server: Server) -> None:
    with pg_server.database(template=None) as url:
        migrate.upgrade(url)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regclass('books')").fetchone() == (None,)  # no demo: issue 16
        migrate.downgrade(url, "base")
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regnamespace('rowcast')").fetchone() == (None,)
        migrate.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE shelf (id int PRIMARY KEY, title text)")
            capture.enable(conn, "shelf")
            conn.execute("INSERT INTO shelf VALUES (1, 'again')")
            assert conn.execute("SELECT count(*) FROM rowcast.changes").fetchone() == (1,)


def rowcast_cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rowcast.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "DATABASE_URL": url},
    )


def test_cli_capture_verify_detects_a_dropped_trigger(db_url: str, conn: Conn) -> None:
    ok = rowcast_cli("capture", "verify", url=db_url)
    assert ok.returncode == 0, ok.stderr
    assert "public.books\tok" in ok.stdout
    conn.execute("DROP TRIGGER rowcast_capture_truncate_v3 ON books")
    bad = rowcast_cli("capture", "verify", url=db_url)
    assert bad.returncode == 1
    assert "public.books\tmissing" in bad.stdout and "need attention" in bad.stderr


def test_cli_errors_are_one_line_not_a_traceback(db_url: str, conn: Conn) -> None:
    conn.execute("CREATE TABLE loose (x int)")
    result = rowcast_cli("capture", "enable", "loose", url=db_url)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "rowcast: table public.loose has no primary key (capture identifies rows by their "
        "primary key; add one, e.g. ALTER TABLE ... ADD PRIMARY KEY (...))"
    )
    missing = rowcast_cli("capture", "enable", "nosuch", url=db_url)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == "rowcast: no such table: nosuch"


def test_cli_prune(db_url: str, conn: Conn) -> None:
    conn.execute("INSERT INTO books (title) VALUES ('old')")
    conn.execute("UPDATE rowcast.changes SET at = now() - interval '3 days'")
    wait_prunable(conn)
    result = rowcast_cli("prune", "--older-than", "24h", url=db_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("removed 1 change(s) older than 24h")


def test_a_partitioned_table_is_captured_at_its_root_with_partitions_added_later(conn: Conn) -> None:
    """Regression: capture on the parent logged changes under the partitions' names (8 of 9 lost)."""
    conn.execute("CREATE TABLE events (id int PRIMARY KEY, v int) PARTITION BY RANGE (id)")
    conn.execute("CREATE TABLE events_low PARTITION OF events FOR VALUES FROM (0) TO (100)")
    capture.enable(conn, "events")
    conn.execute("CREATE TABLE events_high PARTITION OF events FOR VALUES FROM (100) TO (200)")
    conn.execute("INSERT INTO events VALUES (1, 1), (150, 2)")
    conn.execute("UPDATE events SET v = 3 WHERE id = 150")
    conn.execute("UPDATE events SET id = 160 WHERE id = 1")  # moves between partitions
    conn.execute("TRUNCATE events")
    rows = log(conn)
    assert {(r["schema_name"], r["table_name"]) for r in rows} == {("public", "events")}
    assert [(r["op"], r["pk"]) for r in rows] == [
        ("insert", {"id": 1}), ("insert", {"id": 150}), ("update", {"id": 150}),
        ("delete", {"id": 1}), ("insert", {"id": 160}), ("truncate", None),
    ]  # fmt: skip
    (status,) = capture.status(conn, "events")
    assert status.ok and "partitions included" in status.detail
    assert [s.table for s in capture.status(conn) if s.table.startswith("events")] == ["events"]
    with pytest.raises(CaptureError, match="is a partition of"):
        capture.enable(conn, "events_low")


def test_an_installation_on_v2_moves_to_the_current_capture_in_place(pg_server: Server) -> None:
    """Issue 13: the migration moves existing installations and their captured tables to v3+."""
    with pg_server.database(template=None) as url:
        migrate.upgrade(url, "0003")  # capture v2
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE ledger (id int PRIMARY KEY, amount numeric)")
            conn.execute("SELECT rowcast.enable_capture('ledger')")
            conn.execute("INSERT INTO ledger VALUES (1, 10)")
        migrate.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            triggers = conn.execute(
                "SELECT tgname, tgfoid::regproc::text FROM pg_trigger WHERE tgrelid = 'ledger'::regclass ORDER BY 1"
            ).fetchall()
            assert triggers == [
                ("rowcast_capture_truncate_v3", "rowcast.capture_v3"),
                ("rowcast_capture_v3", "rowcast.capture_v3"),
            ]
            assert conn.execute(
                "SELECT relid = 'ledger'::regclass FROM rowcast.captured WHERE table_name = 'ledger'"
            ).fetchone() == (True,)
            assert conn.execute("SELECT to_regproc('rowcast.capture_v2')").fetchone() == (None,)
            conn.execute("UPDATE ledger SET amount = 11 WHERE id = 1")
            rows = conn.execute(
                "SELECT op, pk, \"row\" -> 'amount' FROM rowcast.changes WHERE table_name = 'ledger' ORDER BY id"
            ).fetchall()
            assert rows == [("insert", {"id": 1}, 10), ("update", {"id": 1}, 11)]
            assert [s.status for s in capture.status(conn, "ledger")] == ["ok"]
