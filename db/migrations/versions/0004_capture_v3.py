"""rowcast capture v3: the log is the only truth, least privilege, partitions at the root.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op
from rowcast.db import sqlfiles

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _raw(sql: str) -> None:
    op.get_bind().connection.dbapi_connection.execute(sql)  # type: ignore[union-attr]


# Commenting on a role takes CREATEROLE up to Postgres 15 (ADMIN OPTION from 16). `rowcast roles
# install` creates rowcast_capture with this very comment, so a database owner without CREATEROLE
# can run the migration: the statement is left out when its effect is already there.
_ROLE_COMMENT = "COMMENT ON ROLE rowcast_capture IS 'rowcast: owns the capture trigger; may only append to rowcast.changes';"


def _role_already_commented() -> bool:
    found = op.get_bind().exec_driver_sql(
        "SELECT shobj_description(oid, 'pg_authid') = "
        "'rowcast: owns the capture trigger; may only append to rowcast.changes' "
        "FROM pg_roles WHERE rolname = 'rowcast_capture'"
    )
    return bool(found.scalar())


def upgrade() -> None:
    if _role_already_commented():
        _raw(sqlfiles.without("capture_v3.sql", _ROLE_COMMENT))
    else:
        _raw(sqlfiles.read("capture_v3.sql"))


def downgrade() -> None:
    # Version 2's functions come back from their frozen files, not from a copy kept here.
    for name, signature in (
        ("capture_v1.sql", "rowcast.notify_limit()"),
        ("capture_v1.sql", "rowcast.capture_v1()"),
        ("capture_v2.sql", "rowcast.capture_v2()"),
        ("capture_v2.sql", "rowcast.enable_capture(tbl regclass)"),
        ("capture_v2.sql", "rowcast.capture_status()"),
        ("capture_v1.sql", "rowcast.disable_capture(tbl regclass)"),
        ("capture_v1.sql", "rowcast.prune(older_than interval DEFAULT '24 hours')"),
        ("capture_v2.sql", "rowcast.set_wake_mode(mode text)"),
        ("capture_v2.sql", "rowcast.wake_mode()"),
    ):
        _raw(sqlfiles.function(name, signature))
    _raw(sqlfiles.read("capture_v3_down.sql"))
