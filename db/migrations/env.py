"""Alembic environment: online migrations only, on the psycopg 3 driver.

rowcast's history is rowcast.alembic_version, in its own schema, never the default
public.alembic_version that an application's own Alembic uses (db/migrate.py). The schema is
therefore created before Alembic writes its version table, in the same transaction, and dropped
again by a downgrade to base once the version table is all that is left in it.
"""

from __future__ import annotations

import os

from alembic import context
from rowcast.db.models import Base
from rowcast.db.urls import sqlalchemy_url
from sqlalchemy import Connection, create_engine, pool

SCHEMA = "rowcast"

# What a downgrade to base leaves: the schema holding the empty version table and nothing else.
_ONLY_HISTORY_LEFT = """
SELECT NOT EXISTS (SELECT FROM rowcast.alembic_version)
   AND NOT EXISTS (SELECT FROM pg_class WHERE relnamespace = 'rowcast'::regnamespace
                    AND relname NOT IN ('alembic_version', 'alembic_version_pkc'))
   AND NOT EXISTS (SELECT FROM pg_proc WHERE pronamespace = 'rowcast'::regnamespace)
   AND NOT EXISTS (SELECT FROM pg_type WHERE typnamespace = 'rowcast'::regnamespace AND typrelid = 0
                    AND typelem = 0)
"""


def _create_schema(connection: Connection) -> None:
    # Not IF NOT EXISTS: that still asks for CREATE on the database, which an installed schema's
    # owner need not have.
    if connection.exec_driver_sql("SELECT to_regnamespace('rowcast') IS NULL").scalar():
        connection.exec_driver_sql("CREATE SCHEMA rowcast")


def _drop_if_only_history(connection: Connection) -> None:
    exists = connection.exec_driver_sql("SELECT to_regclass('rowcast.alembic_version') IS NOT NULL").scalar()
    if exists and connection.exec_driver_sql(_ONLY_HISTORY_LEFT).scalar():
        connection.exec_driver_sql("DROP SCHEMA rowcast CASCADE")


config = context.config
url = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL", "")
engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table_schema=SCHEMA,
    )
    with context.begin_transaction():
        _create_schema(connection)
        context.run_migrations()
        _drop_if_only_history(connection)
engine.dispose()
