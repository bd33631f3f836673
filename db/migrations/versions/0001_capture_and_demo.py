"""rowcast capture v1 (and, in installations made before issue 16, the demo tables books and authors).

New installations no longer get the demo tables from a migration: `rowcast migrate` installs
rowcast's own schema and nothing in `public`; `rowcast demo install` (and `rowcast up`) create
books and authors. Existing installations keep theirs.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op
from rowcast.db import sqlfiles

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

DEMO = ("books", "authors")  # what 0001 created before issue 16


def _raw(sql: str) -> None:
    # The psycopg connection itself: no parameters means no %-interpolation of the SQL file's
    # format() strings, and no SQLAlchemy bind parsing of its ::casts.
    op.get_bind().connection.dbapi_connection.execute(sql)  # type: ignore[union-attr]


def upgrade() -> None:
    # The schema already exists: env.py creates it first, to hold rowcast.alembic_version.
    _raw(sqlfiles.without("capture_v1.sql", "CREATE SCHEMA rowcast;"))


def _is_demo(table: str) -> bool:
    """Whether public.<table> is rowcast's demo table (it has the demo's version trigger)."""
    found = op.get_bind().exec_driver_sql(
        "SELECT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = to_regclass(%(t)s) AND tgname = %(n)s)",
        {"t": f"public.{table}", "n": f"{table}_bump_version"},
    )
    return bool(found.scalar())


def downgrade() -> None:
    # Uninstalling rowcast takes its demo tables along (as it always did), never a table of yours.
    for table in DEMO:
        if _is_demo(table):
            op.drop_table(table, schema="public")
    # Everything in the schema goes, except the history Alembic is about to update: env.py drops
    # the schema once that is empty.
    _raw("CREATE SCHEMA rowcast_history_tmp")
    _raw("ALTER TABLE rowcast.alembic_version SET SCHEMA rowcast_history_tmp")
    _raw("DROP SCHEMA rowcast CASCADE")
    _raw("ALTER SCHEMA rowcast_history_tmp RENAME TO rowcast")
