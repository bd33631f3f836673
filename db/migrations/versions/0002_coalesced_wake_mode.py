"""rowcast capture v2: the coalesced wake-up mode (doorbell), triggers moved to capture_v2.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op
from rowcast.db import sqlfiles

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_REENABLE = """
SELECT rowcast.enable_capture(to_regclass(format('%I.%I', schema_name, table_name)))
  FROM rowcast.captured WHERE to_regclass(format('%I.%I', schema_name, table_name)) IS NOT NULL
"""


def _raw(sql: str) -> None:
    op.get_bind().connection.dbapi_connection.execute(sql)  # type: ignore[union-attr]


def upgrade() -> None:
    _raw(sqlfiles.read("capture_v2.sql"))
    _raw(_REENABLE)


def downgrade() -> None:
    _raw("SELECT rowcast.set_wake_mode('notify')")
    _raw(f'ALTER DATABASE "{op.get_bind().engine.url.database}" RESET rowcast.wake_mode')
    _raw(sqlfiles.read("capture_v2_down.sql"))
