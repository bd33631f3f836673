"""rowcast's cluster-wide roles: created by an explicit step, never as a side effect of migrate.

Roles belong to the whole Postgres server, not to one database, so creating them needs a
superuser or CREATEROLE and concerns every database there. `rowcast migrate` only checks that
they exist and that it may use them, and says in one line what is missing and who can fix it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from rowcast.errors import RowcastError

Conn = psycopg.Connection[tuple[Any, ...]]

# The capture trigger's owner, the notifier's reader and the app's writer (README "Database roles").
ROLES = {
    "rowcast_capture": "rowcast: owns the capture trigger; may only append to rowcast.changes",
    "rowcast_notifier": "rowcast: may LISTEN and read the change log, nothing else",
    "rowcast_app": "rowcast: the API's role; no access to the change log",
}


class RolesMissing(RowcastError):
    """rowcast's roles do not exist on this Postgres server."""


def missing(conn: Conn) -> list[str]:
    """The rowcast roles this server lacks, in ROLES order."""
    present = {
        r for (r,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(ROLES),))
    }
    return [name for name in ROLES if name not in present]


def install(conn: Conn, owner: str | None = None) -> list[str]:
    """Create the roles that are missing (idempotent) and return their names.

    `owner` is the role that will run `rowcast migrate` without being a superuser: the migration
    hands the capture function over to rowcast_capture, which takes membership of it with ADMIN
    OPTION (Postgres 16+ asks for ADMIN to grant a role, even to oneself).
    """
    created = missing(conn)
    with conn.transaction():
        for name in created:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
            conn.execute(
                sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(name), sql.Literal(ROLES[name]))
            )
        if owner is not None:
            conn.execute(
                sql.SQL("GRANT rowcast_capture TO {} WITH ADMIN OPTION").format(sql.Identifier(owner))
            )
    return created


def describe(created: list[str]) -> str:
    """One line for the person who ran the step: roles are cluster-wide, so say which appeared."""
    if not created:
        return "rowcast's roles already exist: " + ", ".join(ROLES)
    return f"created cluster-wide roles (NOLOGIN, for every database of this server): {', '.join(created)}"


def check_migrator(conn: Conn, *, first_install: bool) -> None:
    """Refuse, in one line, a migration that Postgres would stop halfway with a permission error.

    Needed: the roles (created by `rowcast roles install`); and, for a login that is no
    superuser, membership of rowcast_capture (the capture functions are handed to it), with ADMIN
    OPTION the first time (capture v3 grants it to the migrating login), and CREATE on the database.
    """
    absent = missing(conn)
    user = conn.execute("SELECT current_user").fetchone()[0]  # type: ignore[index]
    superuser = _is_superuser(conn)
    if absent:
        install = "rowcast roles install" + ("" if superuser else f" --owner {user}")
        raise RolesMissing(
            f"rowcast's roles do not exist on this server ({', '.join(absent)}): a superuser (or a "
            f"role with CREATEROLE) creates them once with `{install}` (or runs `rowcast migrate "
            "--roles`)"
        )
    if superuser:
        return
    needs = _needs(conn, first_install=first_install)
    if needs:
        raise RowcastError(
            f"rowcast migrate as {user} (not a superuser) needs {' and '.join(needs)}: a superuser runs "
            f"`rowcast roles install --owner {user}`"
            + (" and GRANT CREATE ON DATABASE to it" if any("CREATE" in n for n in needs) else "")
        )


def _is_superuser(conn: Conn) -> bool:
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


def _needs(conn: Conn, *, first_install: bool) -> list[str]:
    """What a non-superuser lacks for the migration, each as a phrase."""
    row = conn.execute(
        "SELECT pg_has_role(current_user, 'rowcast_capture', 'MEMBER'), "
        "pg_has_role(current_user, 'rowcast_capture', 'MEMBER WITH ADMIN OPTION'), "
        "(SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user), "
        "has_database_privilege(current_database(), 'CREATE'), "
        "to_regnamespace('rowcast') IS NOT NULL, current_setting('server_version_num')::int"
    ).fetchone()
    assert row is not None
    member, admin, createrole, create_db, has_schema, version = row
    # Up to Postgres 15, CREATEROLE alone may grant any non-superuser role.
    may_grant = admin or (createrole and version < 160000)
    needs: list[str] = []
    if first_install and not may_grant:  # capture v3 grants rowcast_capture to the migrating login
        needs.append("membership of rowcast_capture WITH ADMIN OPTION")
    elif not first_install and not member:  # later versions hand functions over to rowcast_capture
        needs.append("membership of rowcast_capture")
    if not has_schema and not create_db:
        needs.append("CREATE on this database (for the schema rowcast)")
    return needs
