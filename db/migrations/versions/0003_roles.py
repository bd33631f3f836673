"""Least-privilege roles: rowcast_notifier (read the log, LISTEN) and rowcast_app (no log access).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

from db import sqlfiles

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _raw(sql: str) -> None:
    op.get_bind().connection.dbapi_connection.execute(sql)  # type: ignore[union-attr]


def upgrade() -> None:
    _raw(sqlfiles.read("roles_v1.sql"))


def downgrade() -> None:
    _raw(sqlfiles.read("roles_v1_down.sql"))
