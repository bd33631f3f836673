"""DDL on captured tables: one exact log row per table and command; the registry follows.

The contract (db/sql/capture_v4.sql): op 'schema' for any ALTER TABLE (and a schema's RENAME) with
`row` = {"columns": [{"name", "type", "category"}...], "pk": [...], "renamed_from": {...} | null},
op 'drop' for a dropped table; pk and old NULL; the doorbell rings as for row changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from rowcast.db import capture, migrate

from tests.integration.test_capture import rowcast_cli
from tests.pg import ROLE_PASSWORD, Server, as_role

Conn = psycopg.Connection[tuple[Any, ...]]

DROPPED = {"columns": [], "pk": [], "renamed_from": None}


def col(name: str, type_: str = "integer", category: str = "N") -> dict[str, str]:
    return {"name": name, "type": type_, "category": category}


def shape(
    columns: list[dict[str, str]], pk: list[str], renamed_from: tuple[str, str] | None = None
) -> dict[str, Any]:
    moved = None if renamed_from is None else {"schema": renamed_from[0], "table": renamed_from[1]}
    return {"columns": columns, "pk": pk, "renamed_from": moved}


def changes(conn: Conn, after: int = 0) -> list[tuple[Any, ...]]:
    """(op, schema, table, relid, pk, old, row) of every log row after id `after`."""
    return conn.execute(
        "SELECT op, schema_name, table_name, relid, pk, old, row FROM rowcast.changes WHERE id > %s ORDER BY id",
        (after,),
    ).fetchall()


def last_id(conn: Conn) -> int:
    row = conn.execute("SELECT coalesce(max(id), 0) FROM rowcast.changes").fetchone()
    assert row is not None
    return int(row[0])


def registry(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT schema_name, table_name, pk_columns, relid FROM rowcast.captured ORDER BY relid"
    ).fetchall()


def oid(conn: Conn, table: str) -> int:
    row = conn.execute("SELECT %s::regclass::oid", (table,)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def shelf(conn: Conn) -> int:
    """public.shelf (id int PRIMARY KEY, title text), captured; its oid."""
    conn.execute("CREATE TABLE shelf (id int PRIMARY KEY, title text)")
    capture.enable(conn, "shelf")
    return oid(conn, "shelf")


SHELF = [col("id"), col("title", "text", "S")]


@pytest.fixture
def listener(db_url: str) -> Iterator[Conn]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("LISTEN rowcast")
        yield conn


def rings(conn: Conn, timeout: float = 0.5) -> list[str]:
    return [n.payload for n in conn.notifies(timeout=timeout)]


def test_enabling_disabling_and_ddl_on_uncaptured_tables_log_nothing(conn: Conn, listener: Conn) -> None:
    conn.execute("CREATE TABLE loose (id int PRIMARY KEY)")
    capture.enable(conn, "loose")
    capture.enable(conn, "loose")  # replaces its triggers: DROP TRIGGER fires sql_drop
    capture.disable(conn, "loose")
    conn.execute("ALTER TABLE loose ADD COLUMN x int")
    conn.execute("ALTER TABLE loose RENAME TO looser")
    conn.execute("ALTER TABLE looser DROP COLUMN x")
    conn.execute("CREATE SCHEMA side")
    conn.execute("ALTER TABLE looser SET SCHEMA side")
    conn.execute("ALTER SCHEMA side RENAME TO aside")
    conn.execute("DROP SCHEMA aside CASCADE")
    assert changes(conn) == []
    assert rings(listener) == []


def test_add_column_logs_the_new_shape_once_per_command(conn: Conn, shelf: int) -> None:
    conn.execute("ALTER TABLE shelf ADD COLUMN pages int")
    # Several subcommands, a sequence and an index created on the way: still one row.
    conn.execute("ALTER TABLE shelf ADD COLUMN n serial UNIQUE, ADD COLUMN tags text[] DEFAULT '{}'")
    assert changes(conn) == [
        ("schema", "public", "shelf", shelf, None, None, shape([*SHELF, col("pages")], ["id"])),
        (
            "schema", "public", "shelf", shelf, None, None,
            shape([*SHELF, col("pages"), col("n"), col("tags", "text[]", "A")], ["id"]),
        ),
    ]  # fmt: skip


def test_drop_column_logs_the_shape_without_it(conn: Conn, shelf: int) -> None:
    conn.execute("ALTER TABLE shelf DROP COLUMN title")
    assert changes(conn) == [("schema", "public", "shelf", shelf, None, None, shape([col("id")], ["id"]))]


def test_a_column_dropped_by_drop_type_cascade_is_recorded(conn: Conn, shelf: int) -> None:
    conn.execute("CREATE TYPE mood AS ENUM ('calm')")
    conn.execute("ALTER TABLE shelf ADD COLUMN m mood")
    conn.execute("DROP TYPE mood CASCADE")
    assert changes(conn) == [
        (
            "schema",
            "public",
            "shelf",
            shelf,
            None,
            None,
            shape([*SHELF, col("m", "public.mood", "E")], ["id"]),
        ),
        ("schema", "public", "shelf", shelf, None, None, shape(SHELF, ["id"])),
    ]


def test_rename_column_logs_the_new_names(conn: Conn, shelf: int) -> None:
    conn.execute("ALTER TABLE shelf RENAME COLUMN title TO name")
    assert changes(conn) == [
        ("schema", "public", "shelf", shelf, None, None, shape([col("id"), col("name", "text", "S")], ["id"]))
    ]


def test_renaming_the_key_column_never_logs_a_null_key(conn: Conn, shelf: int) -> None:
    """Regression: renaming the key column logged pk {"id": null} until capture was re-enabled."""
    conn.execute("INSERT INTO shelf VALUES (1, 'a')")
    conn.execute("ALTER TABLE shelf RENAME COLUMN id TO shelf_id")
    # The old key name now names another column: the key still comes from the registry.
    conn.execute("ALTER TABLE shelf RENAME COLUMN title TO id")
    mark = last_id(conn)
    conn.execute("UPDATE shelf SET id = 'b'")
    conn.execute("INSERT INTO shelf VALUES (2, 'c')")
    conn.execute("DELETE FROM shelf WHERE shelf_id = 1")
    assert [(op, pk) for op, _, _, _, pk, _, _ in changes(conn, mark)] == [
        ("update", {"shelf_id": 1}),
        ("insert", {"shelf_id": 2}),
        ("delete", {"shelf_id": 1}),
    ]
    assert registry(conn)[-1] == ("public", "shelf", ["shelf_id"], shelf)
    assert changes(conn)[1] == (
        "schema", "public", "shelf", shelf, None, None, shape([col("shelf_id"), col("title", "text", "S")], ["shelf_id"]),
    )  # fmt: skip
    assert capture.status(conn, "shelf")[0].ok


def test_dropping_and_adding_the_primary_key(conn: Conn, shelf: int) -> None:
    conn.execute("ALTER TABLE shelf ALTER COLUMN title SET NOT NULL")
    warnings: list[str] = []
    conn.add_notice_handler(lambda d: warnings.append(f"{d.severity_nonlocalized}: {d.message_primary}"))
    conn.execute("ALTER TABLE shelf DROP CONSTRAINT shelf_pkey")
    assert warnings == ["WARNING: rowcast: captured table public.shelf has no primary key now"]
    (status,) = capture.status(conn, "shelf")
    assert status.status == "key_changed"  # the registry keeps the last key until there is one
    conn.execute("ALTER TABLE shelf ADD PRIMARY KEY (title, id)")
    assert capture.status(conn, "shelf")[0].ok
    conn.execute("INSERT INTO shelf VALUES (1, 'a')")
    assert changes(conn) == [
        ("schema", "public", "shelf", shelf, None, None, shape(SHELF, ["id"])),  # SET NOT NULL
        ("schema", "public", "shelf", shelf, None, None, shape(SHELF, [])),
        ("schema", "public", "shelf", shelf, None, None, shape(SHELF, ["title", "id"])),
        ("insert", "public", "shelf", shelf, {"title": "a", "id": 1}, None, {"id": 1, "title": "a"}),
    ]


def test_a_key_change_through_an_index_is_recorded(conn: Conn, shelf: int) -> None:
    conn.execute("ALTER TABLE shelf ALTER COLUMN title SET NOT NULL")
    mark = last_id(conn)
    conn.execute("CREATE UNIQUE INDEX shelf_title ON shelf (title)")  # not ALTER TABLE: nothing
    conn.execute("ALTER TABLE shelf DROP CONSTRAINT shelf_pkey, ADD PRIMARY KEY USING INDEX shelf_title")
    assert changes(conn, mark) == [("schema", "public", "shelf", shelf, None, None, shape(SHELF, ["title"]))]
    assert registry(conn)[-1] == ("public", "shelf", ["title"], shelf)


def test_renamed_table_is_followed_by_identity(db_url: str, conn: Conn, shelf: int) -> None:
    """Regression: after a rename verify reported table_missing forever and disable <old> failed."""
    conn.execute("ALTER TABLE shelf RENAME TO rack")
    conn.execute("INSERT INTO rack VALUES (1, 'a')")
    assert changes(conn) == [
        ("schema", "public", "rack", shelf, None, None, shape(SHELF, ["id"], ("public", "shelf"))),
        ("insert", "public", "rack", shelf, {"id": 1}, None, {"id": 1, "title": "a"}),
    ]
    assert registry(conn)[-1] == ("public", "rack", ["id"], shelf)

    verify = rowcast_cli("capture", "verify", url=db_url)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "public.rack\tok\tcapture v4 on (id)" in verify.stdout and "shelf" not in verify.stdout
    old = rowcast_cli("capture", "verify", "shelf", url=db_url)
    assert old.returncode == 1
    assert old.stdout == "public.shelf\trenamed\trenamed to public.rack: use that name\n"
    by_old = rowcast_cli("capture", "disable", "shelf", url=db_url)
    assert by_old.returncode == 2
    assert by_old.stderr == "rowcast: no such table: shelf (renamed to public.rack: use that name)\n"
    by_new = rowcast_cli("capture", "disable", "rack", url=db_url)
    assert by_new.returncode == 0, by_new.stderr
    assert by_new.stdout == "capture disabled on public.rack\n"
    assert [t for _, t, _, _ in registry(conn)] == ["books", "authors"]


def test_set_schema_and_schema_rename_are_renames(conn: Conn, shelf: int) -> None:
    conn.execute("CREATE SCHEMA archive")
    conn.execute("ALTER TABLE shelf SET SCHEMA archive")
    conn.execute("CREATE TABLE archive.bin (id int PRIMARY KEY)")
    capture.enable(conn, "archive.bin")
    conn.execute("ALTER SCHEMA archive RENAME TO attic")
    conn.execute("ALTER SCHEMA attic OWNER TO rowcast_app")  # not a rename: nothing
    bin_ = oid(conn, "attic.bin")
    assert changes(conn) == [
        ("schema", "archive", "shelf", shelf, None, None, shape(SHELF, ["id"], ("public", "shelf"))),
        ("schema", "attic", "shelf", shelf, None, None, shape(SHELF, ["id"], ("archive", "shelf"))),
        ("schema", "attic", "bin", bin_, None, None, shape([col("id")], ["id"], ("archive", "bin"))),
    ]
    assert registry(conn)[-2:] == [("attic", "shelf", ["id"], shelf), ("attic", "bin", ["id"], bin_)]
    assert [s.status for s in capture.status(conn)] == ["ok"] * 4


def test_dropped_table_logs_drop_and_is_forgotten(db_url: str, conn: Conn, shelf: int) -> None:
    """Regression: DROP TABLE emitted nothing and verify then reported table_missing."""
    with pytest.raises(psycopg.errors.DivisionByZero):
        with conn.transaction():
            conn.execute("DROP TABLE shelf")
            conn.execute("SELECT 1 / 0")
    assert changes(conn) == [] and len(registry(conn)) == 3  # rolled back with the transaction
    conn.execute("ALTER TABLE shelf RENAME TO rack")
    conn.execute("DROP TABLE rack")
    assert changes(conn) == [
        ("schema", "public", "rack", shelf, None, None, shape(SHELF, ["id"], ("public", "shelf"))),
        ("drop", "public", "rack", shelf, None, None, DROPPED),
    ]
    assert [t for _, t, _, _ in registry(conn)] == ["books", "authors"]

    verify = rowcast_cli("capture", "verify", url=db_url)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    named = rowcast_cli("capture", "verify", "rack", url=db_url)
    assert named.returncode == 1
    assert named.stdout == "public.rack\tdropped\tthe table was dropped, and its capture with it\n"
    disable = rowcast_cli("capture", "disable", "rack", url=db_url)
    assert disable.returncode == 2
    assert disable.stderr == "rowcast: no such table: rack (the table was dropped, and its capture with it)\n"
    old = rowcast_cli("capture", "disable", "shelf", url=db_url)
    assert old.stderr == "rowcast: no such table: shelf (renamed, and since dropped)\n"


def test_drop_schema_cascade_drops_each_captured_table(db_url: str, conn: Conn) -> None:
    conn.execute("CREATE SCHEMA doomed")
    conn.execute("CREATE TABLE doomed.a (id int PRIMARY KEY)")
    conn.execute("CREATE TABLE doomed.b (id int PRIMARY KEY)")
    conn.execute("CREATE TABLE doomed.uncaptured (id int PRIMARY KEY)")
    capture.enable(conn, "doomed.a")
    capture.enable(conn, "doomed.b")
    a, b = oid(conn, "doomed.a"), oid(conn, "doomed.b")
    conn.execute("DROP SCHEMA doomed CASCADE")
    assert changes(conn) == [
        ("drop", "doomed", "a", a, None, None, DROPPED),
        ("drop", "doomed", "b", b, None, None, DROPPED),
    ]
    assert [t for _, t, _, _ in registry(conn)] == ["books", "authors"]
    disable = rowcast_cli("capture", "disable", "doomed.a", url=db_url)
    assert disable.returncode == 2
    assert (
        disable.stderr
        == "rowcast: no such table: doomed.a (the table was dropped, and its capture with it)\n"
    )


def test_partitioned_table_ddl_is_recorded_once_at_the_root(conn: Conn) -> None:
    conn.execute("CREATE TABLE events (id int PRIMARY KEY, v int) PARTITION BY RANGE (id)")
    conn.execute("CREATE TABLE events_low PARTITION OF events FOR VALUES FROM (0) TO (100)")
    capture.enable(conn, "events")
    root = oid(conn, "events")
    conn.execute("ALTER TABLE events ADD COLUMN w int")  # cascades to every partition: one row
    conn.execute("CREATE TABLE events_high (id int PRIMARY KEY, v int, w int)")
    conn.execute("ALTER TABLE events ATTACH PARTITION events_high FOR VALUES FROM (100) TO (200)")
    conn.execute("ALTER TABLE events_low ADD CONSTRAINT positive CHECK (v > 0)")  # a partition: the root
    conn.execute("CREATE TABLE events_mid PARTITION OF events FOR VALUES FROM (200) TO (300)")  # no ALTER
    conn.execute("DROP TABLE events_mid")  # a partition, not the captured table
    conn.execute("INSERT INTO events VALUES (150, 1, 2)")
    conn.execute("DROP TABLE events")
    events = shape([col("id"), col("v"), col("w")], ["id"])
    assert changes(conn) == [
        ("schema", "public", "events", root, None, None, events),
        ("schema", "public", "events", root, None, None, events),
        ("schema", "public", "events", root, None, None, events),
        ("insert", "public", "events", root, {"id": 150}, None, {"id": 150, "v": 1, "w": 2}),
        ("drop", "public", "events", root, None, None, DROPPED),
    ]


def test_ddl_rings_the_doorbell_once_per_transaction_on_commit(
    db_url: str, conn: Conn, listener: Conn, shelf: int
) -> None:
    conn.execute("ALTER TABLE shelf ADD COLUMN a int")
    assert rings(listener) == [""]
    with psycopg.connect(db_url) as writer:
        with writer.transaction():
            writer.execute("INSERT INTO shelf VALUES (1, 'x')")
            writer.execute("ALTER TABLE shelf ADD COLUMN b int")
            writer.execute("DROP TABLE shelf")
            assert rings(listener, 0.3) == []  # nothing before the commit
        assert rings(listener) == [""]
        with writer.transaction():
            writer.execute("CREATE TABLE t (id int PRIMARY KEY)")
            writer.execute("SELECT rowcast.enable_capture('t')")
            writer.execute("SET LOCAL rowcast.wake = off")  # opted out, as for row changes
            writer.execute("ALTER TABLE t ADD COLUMN c int")
    assert rings(listener) == []
    assert [op for op, *_ in changes(conn)] == ["schema", "insert", "schema", "drop", "schema"]


def test_ddl_rings_only_by_claiming_the_doorbell_in_coalesced_mode(
    conn: Conn, listener: Conn, shelf: int
) -> None:
    conn.execute("SELECT rowcast.set_wake_mode('coalesced')")
    assert rings(listener) == [""]  # set_wake_mode's own ring
    conn.execute("ALTER TABLE shelf ADD COLUMN a int")
    conn.execute("ALTER TABLE shelf ADD COLUMN b int")  # the doorbell is not re-armed: silent
    assert rings(listener) == [""]
    assert conn.execute("SELECT armed FROM rowcast.doorbell").fetchone() == (False,)


# -- without a superuser --------------------------------------------------------------------------


@pytest.fixture
def owner_role(pg_server: Server, template_db: str) -> Iterator[str]:
    """A login that is no superuser but may run the migrations: it will own the database, may
    create roles and administer rowcast_capture (template_db made the rowcast roles exist)."""
    role = "rowcast_test_dbo"
    with psycopg.connect(pg_server.url(pg_server.maintenance_db), autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.execute(f"CREATE ROLE {role} LOGIN CREATEROLE PASSWORD '{ROLE_PASSWORD}'")
        admin.execute(f"GRANT rowcast_capture TO {role} WITH ADMIN OPTION")
        try:
            yield role
        finally:
            admin.execute(f"DROP ROLE {role}")


def test_a_migration_without_a_superuser_leaves_ddl_untracked_and_says_so(
    pg_server: Server, owner_role: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pg_server.database(template=None) as url:
        dbname = url.rsplit("/", 1)[1]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{dbname}" OWNER TO {owner_role}')
        as_owner = as_role(url, owner_role)
        with caplog.at_level(logging.WARNING, logger="rowcast.migrate"):
            migrate.upgrade(as_owner)
        assert [r.getMessage().split(":")[0] for r in caplog.records] == [
            "DDL on captured tables is not tracked"
        ]
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM pg_event_trigger").fetchone() == (0,)
            conn.execute("CREATE TABLE shelf (id int PRIMARY KEY, title text)")
            capture.enable(conn, "shelf")
            shelf = oid(conn, "shelf")
            conn.execute("ALTER TABLE shelf RENAME TO rack")
            assert changes(conn) == []
            verify = rowcast_cli("capture", "verify", url=url)
            assert verify.returncode == 1
            assert "public.rack\tddl_untracked\tcapture works, but schema changes" in verify.stdout
            assert {s.status for s in capture.status(conn)} == {"ddl_untracked"}

            # A superuser turns tracking on; the registry catches up with the rename it missed.
            assert conn.execute("SELECT rowcast.track_ddl()").fetchone() == ("DDL tracking is on",)
            assert registry(conn)[-1] == ("public", "rack", ["id"], shelf)
            assert {s.status for s in capture.status(conn)} == {"ok"}
            conn.execute("ALTER TABLE rack RENAME TO shelf")
            assert changes(conn) == [
                ("schema", "public", "shelf", shelf, None, None, shape(SHELF, ["id"], ("public", "rack")))
            ]


def test_a_rename_onto_the_name_of_a_table_dropped_while_untracked_succeeds(conn: Conn, shelf: int) -> None:
    conn.execute("DROP EVENT TRIGGER rowcast_drop_v4")
    conn.execute("CREATE TABLE rack (id int PRIMARY KEY)")
    capture.enable(conn, "rack")
    conn.execute("DROP TABLE rack")  # not tracked: the registry keeps public.rack
    assert capture.status(conn, "rack")[0].status == "table_missing"
    assert conn.execute("SELECT rowcast.track_ddl()").fetchone() == ("DDL tracking is on",)
    conn.execute("ALTER TABLE shelf RENAME TO rack")  # must not fail on the stale registry row
    assert registry(conn)[-1] == ("public", "rack", ["id"], shelf)
    assert [s.status for s in capture.status(conn)] == ["ok"] * 3


# -- migrations ---------------------------------------------------------------------------------

# Everything version 3 consists of, as the catalog shows it (privileges included).
CATALOG = """
SELECT 'function', p.oid::regprocedure::text, pg_get_functiondef(p.oid),
       pg_get_userbyid(p.proowner) || ' ' || coalesce(p.proacl::text, '')
  FROM pg_proc p WHERE p.pronamespace = 'rowcast'::regnamespace
UNION ALL
SELECT 'relation', c.oid::regclass::text, c.relkind::text,
       pg_get_userbyid(c.relowner) || ' ' || coalesce(c.relacl::text, '')
  FROM pg_class c WHERE c.relnamespace = 'rowcast'::regnamespace
UNION ALL
SELECT 'column', a.attrelid::regclass::text || '.' || a.attname, format_type(a.atttypid, a.atttypmod),
       coalesce(nullif(a.attacl::text, '{}'), '')
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.relnamespace = 'rowcast'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'constraint', k.conrelid::regclass::text || '.' || k.conname, pg_get_constraintdef(k.oid), ''
  FROM pg_constraint k WHERE k.connamespace = 'rowcast'::regnamespace
UNION ALL
SELECT 'trigger', t.tgrelid::regclass::text || '.' || t.tgname, pg_get_triggerdef(t.oid), ''
  FROM pg_trigger t WHERE NOT t.tgisinternal
UNION ALL
SELECT 'event trigger', e.evtname, e.evtevent, '' FROM pg_event_trigger e
UNION ALL
SELECT 'schema', n.nspname, '', coalesce(n.nspacl::text, '') FROM pg_namespace n WHERE n.nspname = 'rowcast'
ORDER BY 1, 2
"""


def test_upgrade_to_v4_and_downgrade_to_v3_restores_v3_exactly(pg_server: Server) -> None:
    with pg_server.database(template=None) as url:
        migrate.upgrade(url, "0004")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE shelf (id int PRIMARY KEY, title text)")
            conn.execute("SELECT rowcast.enable_capture('shelf')")
            conn.execute("INSERT INTO shelf VALUES (1, 'a')")
            v3 = conn.execute(CATALOG).fetchall()
            logged = changes(conn)

        migrate.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            assert changes(conn) == logged  # the migration's own DDL logs nothing
            assert {s.status for s in capture.status(conn)} == {"ok"}
            conn.execute("ALTER TABLE shelf RENAME COLUMN title TO name")
            assert [op for op, *_ in changes(conn)] == ["insert", "schema"]

        migrate.downgrade(url, "0004")
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute(CATALOG).fetchall() == v3
            assert changes(conn) == logged  # the schema row version 3 cannot read is gone
            conn.execute("ALTER TABLE shelf RENAME COLUMN name TO title")  # no event trigger left
            assert changes(conn) == logged
            assert {s.status for s in capture.status(conn)} == {"ok"}

        migrate.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE shelf")
            assert [op for op, *_ in changes(conn)] == ["insert", "drop"]
