"""Alembic environment: online migrations only, on the psycopg 3 driver."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

from db.models import Base
from db.urls import sqlalchemy_url

config = context.config
url = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL", "")
engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
