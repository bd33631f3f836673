"""rowcast presence: an unlogged table of who views or edits which row (issue 18).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op
from rowcast.db import sqlfiles

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _raw(sql: str) -> None:
    op.get_bind().connection.dbapi_connection.execute(sql)  # type: ignore[union-attr]


def upgrade() -> None:
    _raw(sqlfiles.read("presence_v1.sql"))


def downgrade() -> None:
    _raw(sqlfiles.read("presence_v1_down.sql"))
