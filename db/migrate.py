"""Alembic configured in code, so migrations run from the installed wheel too.

rowcast lives beside an application in its database: its Alembic history is the table
rowcast.alembic_version, inside rowcast's own schema, so an application's own Alembic (and its
public.alembic_version) never sees rowcast's revisions, nor rowcast the application's.
"""

from __future__ import annotations

from importlib import resources

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from rowcast.db import roles
from rowcast.db.urls import libpq_url

from rowcast.errors import RowcastError

SCHEMA = "rowcast"
VERSION_TABLE = "alembic_version"
CAPTURE_ADMIN_REVISION = "0004"  # capture v3 grants rowcast_capture to the migrating login


class SchemaConflict(RowcastError):
    """The database has a schema named rowcast that rowcast did not install."""


def config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("rowcast.db").joinpath("migrations")))
    # '%' would be read as ConfigParser interpolation.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def revisions() -> set[str]:
    """Every revision id rowcast ships."""
    return {script.revision for script in ScriptDirectory.from_config(config("")).walk_revisions()}


MOVED = "moved rowcast's history from public.alembic_version to rowcast.alembic_version"


def upgrade(url: str, revision: str = "head") -> list[str]:
    """Upgrade rowcast's schema; returns notes worth telling the person who ran it."""
    notes = prepare(url, upgrading=True)
    command.upgrade(config(url), revision)
    return notes


def downgrade(url: str, revision: str) -> list[str]:
    notes = prepare(url, upgrading=False)
    command.downgrade(config(url), revision)
    return notes


def prepare(url: str, *, upgrading: bool) -> list[str]:
    """Before Alembic runs: bring an older installation's history home, refuse what is not ours,
    and check the roles and rights the migration needs (each a one-line error, not a traceback)."""
    with psycopg.connect(libpq_url(url), autocommit=True, application_name="rowcast-migrate") as conn:
        notes = [MOVED] if adopt_legacy_history(conn) else []
        current = _current(conn)
        if current is None and _has_schema(conn):
            raise SchemaConflict(
                "the database already has a schema named rowcast that rowcast did not install (it has "
                "no rowcast.alembic_version): rename or drop it, or use another database"
            )
        if upgrading:
            roles.check_migrator(conn, first_install=current is None or min(current) < CAPTURE_ADMIN_REVISION)
    return notes


def adopt_legacy_history(conn: roles.Conn) -> bool:
    """Move rowcast's history from public.alembic_version (installs before 0.x kept it there, the
    default place, where it collided with an application's Alembic) to rowcast.alembic_version.

    Only a public.alembic_version holding nothing but rowcast's own revision ids is moved: an
    application's table, with its own ids, is never touched. Returns whether it moved.
    """
    if _has_table(conn, SCHEMA, VERSION_TABLE) or not _has_table(conn, "public", VERSION_TABLE):
        return False
    held = {v for (v,) in conn.execute("SELECT version_num FROM public.alembic_version")}
    if not held or not held <= revisions() or not _has_schema(conn):
        return False
    conn.execute("ALTER TABLE public.alembic_version SET SCHEMA rowcast")
    return True


def _current(conn: roles.Conn) -> set[str] | None:
    """rowcast's current revisions, or None when it was never installed here."""
    if not _has_table(conn, SCHEMA, VERSION_TABLE):
        return None
    return {v for (v,) in conn.execute("SELECT version_num FROM rowcast.alembic_version")} or {""}


def _has_schema(conn: roles.Conn) -> bool:
    return conn.execute("SELECT to_regnamespace('rowcast') IS NOT NULL").fetchone() == (True,)


def _has_table(conn: roles.Conn, schema: str, table: str) -> bool:
    found = conn.execute(
        "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))", (schema, table)
    ).fetchone()
    return found is not None and found[0] is not None
