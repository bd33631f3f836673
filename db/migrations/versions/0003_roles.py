"""Least-privilege roles: rowcast_notifier (read the log, LISTEN) and rowcast_app (no log access).

The roles themselves are created by `rowcast roles install` (db/roles.py); `rowcast migrate` checks
they exist before it runs this. The grants on the demo tables apply only where the demo tables are
(installations made before issue 16): a new installation's migration touches nothing in `public`.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op
from rowcast.db import sqlfiles

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _raw(sql: str) -> None:
    op.get_bind().connection.dbapi_connection.execute(sql)  # type: ignore[union-attr]


# The lines of the frozen files that name the demo tables or the schema public.
_DEMO_GRANTS = (
    "GRANT USAGE ON SCHEMA public TO rowcast_app;",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON public.books, public.authors TO rowcast_app;",
)
_DEMO_REVOKES = (
    "REVOKE ALL ON public.books, public.authors FROM rowcast_app;",
    "REVOKE USAGE ON SCHEMA public FROM rowcast_app;",
)


def _has_demo_tables() -> bool:
    found = op.get_bind().exec_driver_sql(
        "SELECT to_regclass('public.books') IS NOT NULL AND to_regclass('public.authors') IS NOT NULL"
    )
    return bool(found.scalar())


def upgrade() -> None:
    if _has_demo_tables():
        _raw(sqlfiles.read("roles_v1.sql"))
    else:
        _raw(sqlfiles.without("roles_v1.sql", *_DEMO_GRANTS))


def downgrade() -> None:
    if _has_demo_tables():
        _raw(sqlfiles.read("roles_v1_down.sql"))
    else:
        _raw(sqlfiles.without("roles_v1_down.sql", *_DEMO_REVOKES))
