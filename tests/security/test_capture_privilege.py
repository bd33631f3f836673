"""Least privilege of capture: the escalation through a json cast, replayed as an attacker.

Regression: capture_v1/v2 were SECURITY DEFINER, owned by the migration owner (a superuser on the
embedded server), executable by PUBLIC, and ran `to_jsonb(NEW)`, which calls a user-defined cast
to json. A `rowcast_app` login (or a captured table's owner) got its SQL run as superuser.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.pg import ROLE_PASSWORD, as_role

Conn = psycopg.Connection[tuple[Any, ...]]

# The payload: make myself superuser, and report who I ran as.
CAST_SQL = """
CREATE TYPE {schema}.mood AS ENUM ('happy');
CREATE FUNCTION {schema}.mood_json({schema}.mood) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'cast runs as %', current_user;
    EXECUTE format('ALTER ROLE %I SUPERUSER', session_user);
    RETURN '"pwned"'::json;
END $$;
CREATE CAST ({schema}.mood AS json) WITH FUNCTION {schema}.mood_json({schema}.mood);
"""


@pytest.fixture
def attacker(conn: Conn) -> Iterator[str]:
    role = "rowcast_test_attacker"
    conn.execute(f"DROP ROLE IF EXISTS {role}")
    conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{ROLE_PASSWORD}' IN ROLE rowcast_app")
    try:
        yield role
    finally:
        conn.execute("DROP SCHEMA IF EXISTS lair CASCADE")
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def is_superuser(conn: Conn, role: str) -> bool:
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    return bool(row and row[0])


def test_an_app_login_cannot_attach_the_capture_function_to_a_table_of_its_own(
    conn: Conn, db_url: str, attacker: str
) -> None:
    with psycopg.connect(as_role(db_url, attacker), autocommit=True) as evil:
        evil.execute("CREATE TEMP TABLE loot (id int PRIMARY KEY, m text)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for function"):
            evil.execute(
                "CREATE TRIGGER t AFTER INSERT ON pg_temp.loot FOR EACH ROW EXECUTE FUNCTION rowcast.capture_v3()"
            )
        for old in ("capture_v1", "capture_v2"):  # retired, not just revoked
            with pytest.raises(psycopg.errors.UndefinedFunction):
                evil.execute(
                    f"CREATE TRIGGER t2 AFTER INSERT ON pg_temp.loot FOR EACH ROW EXECUTE FUNCTION rowcast.{old}('id')"
                )
    assert not is_superuser(conn, attacker)


def test_a_captured_tables_owner_gets_only_the_capture_roles_rights_through_a_cast(
    conn: Conn, db_url: str, attacker: str
) -> None:
    conn.execute("CREATE SCHEMA lair")
    conn.execute(f"ALTER SCHEMA lair OWNER TO {attacker}")
    notices: list[str] = []
    with psycopg.connect(as_role(db_url, attacker), autocommit=True) as evil:
        evil.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        evil.execute(CAST_SQL.format(schema="lair"))
        evil.execute("CREATE TABLE lair.loot (id int PRIMARY KEY, m lair.mood)")
        conn.execute("SELECT rowcast.enable_capture('lair.loot')")  # the DBA enables capture for them
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            evil.execute("INSERT INTO lair.loot VALUES (1, 'happy')")
    assert notices == ["cast runs as rowcast_capture"]  # not postgres, not the migration owner
    assert not is_superuser(conn, attacker)


def test_the_capture_function_refuses_a_table_that_is_not_registered(conn: Conn) -> None:
    conn.execute("CREATE TABLE stray (id int PRIMARY KEY)")
    # Even the owner, who may create the trigger, gets nothing logged for an unregistered table.
    conn.execute("CREATE TRIGGER t AFTER INSERT ON stray FOR EACH ROW EXECUTE FUNCTION rowcast.capture_v3()")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not registered for capture"):
        conn.execute("INSERT INTO stray VALUES (1)")
    assert conn.execute("SELECT count(*) FROM rowcast.changes").fetchone() == (0,)


def test_the_capture_role_can_only_append_to_the_log(conn: Conn) -> None:
    owner = conn.execute(
        "SELECT pg_get_userbyid(proowner), prosecdef, "
        "(SELECT count(*) FROM aclexplode(proacl) a WHERE a.grantee = 0) FROM pg_proc "
        "WHERE oid = 'rowcast.capture_v3()'::regprocedure"
    ).fetchone()
    assert owner is not None and owner[0] == "rowcast_capture" and owner[1] is True
    assert owner[2] == 0  # no EXECUTE for PUBLIC (grantee 0)
    role = conn.execute(
        "SELECT rolsuper, rolcanlogin, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles "
        "WHERE rolname = 'rowcast_capture'"
    ).fetchone()
    assert role == (False, False, False, False, False)
    rights = {
        table: conn.execute(
            "SELECT has_table_privilege('rowcast_capture', %s, 'SELECT'), "
            "has_table_privilege('rowcast_capture', %s, 'UPDATE'), "
            "has_table_privilege('rowcast_capture', %s, 'DELETE')",
            (table, table, table),
        ).fetchone()
        for table in ("rowcast.changes", "public.books", "rowcast.config", "rowcast.captured")
    }
    assert rights["rowcast.changes"] == (False, False, False)  # append only: no read, no rewrite
    assert rights["public.books"] == (False, False, False)
    assert rights["rowcast.config"] == (True, False, False)
    assert rights["rowcast.captured"] == (True, False, False)
    assert conn.execute("SELECT has_schema_privilege('rowcast_capture', 'rowcast', 'CREATE')").fetchone() == (
        False,
    )
