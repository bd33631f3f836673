"""rowcast monitoring: notifier heartbeats and per-table activity (issue 17).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op
from rowcast.db import sqlfiles

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _raw(sql: str) -> None:
    op.get_bind().connection.dbapi_connection.execute(sql)  # type: ignore[union-attr]


def upgrade() -> None:
    _raw(sqlfiles.read("monitor_v1.sql"))


def downgrade() -> None:
    _raw(sqlfiles.read("monitor_v1_down.sql"))
