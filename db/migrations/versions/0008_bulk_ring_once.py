"""rowcast capture v5: a bulk statement queues the doorbell once, not once per row (issue 19).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op
from rowcast.db import sqlfiles

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _raw(sql: str) -> None:
    op.get_bind().connection.dbapi_connection.execute(sql)  # type: ignore[union-attr]


def upgrade() -> None:
    _raw(sqlfiles.read("capture_v5.sql"))


def downgrade() -> None:
    _raw(sqlfiles.function("capture_v4.sql", "rowcast.capture_rows()"))
