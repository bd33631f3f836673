"""rowcast capture v4: DDL on captured tables is recorded in the log; the registry follows it.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import logging

from alembic import op
from rowcast.db import sqlfiles

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

log = logging.getLogger("rowcast.migrate")


def _raw(sql: str) -> None:
    op.get_bind().connection.dbapi_connection.execute(sql)  # type: ignore[union-attr]


def upgrade() -> None:
    _raw(sqlfiles.read("capture_v4.sql"))
    tracked = op.get_bind().exec_driver_sql(
        "SELECT count(*) FROM pg_event_trigger WHERE evtname IN ('rowcast_ddl_v4', 'rowcast_drop_v4')"
    )
    if tracked.scalar_one() != 2:
        log.warning(
            "DDL on captured tables is not tracked: creating an event trigger needs a superuser. "
            "Renames, drops and column changes will not reach the notifier until a superuser runs "
            "SELECT rowcast.track_ddl(); `rowcast capture verify` reports ddl_untracked."
        )


def downgrade() -> None:
    _raw(sqlfiles.function("capture_v3.sql", "rowcast.capture_status()"))
    _raw(sqlfiles.function("capture_v3.sql", "rowcast.capture_v3()"))
    _raw(sqlfiles.read("capture_v4_down.sql"))
