"""rowcast capture v1, the demo tables books and authors, capture enabled on both.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db import sqlfiles

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

DEMO = ("books", "authors")


def _raw(sql: str) -> None:
    # The psycopg connection itself: no parameters means no %-interpolation of the SQL file's
    # format() strings, and no SQLAlchemy bind parsing of its ::casts.
    op.get_bind().connection.dbapi_connection.execute(sql)  # type: ignore[union-attr]


def _versioned_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    ]


def upgrade() -> None:
    _raw(sqlfiles.read("capture_v1.sql"))
    op.create_table(
        "books",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("author", sa.String(200), server_default="", nullable=False),
        sa.Column("num_pages", sa.Integer(), nullable=True),
        sa.Column("owner", sa.String(100), nullable=True),
        *_versioned_columns(),
        sa.CheckConstraint(
            "num_pages IS NULL OR num_pages BETWEEN 1 AND 100000", name=op.f("ck_books_num_pages_range")
        ),
        sa.CheckConstraint("length(title) BETWEEN 1 AND 300", name=op.f("ck_books_title_length")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_books")),
    )
    op.create_index(op.f("ix_books_owner"), "books", ["owner"])
    op.create_table(
        "authors",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("born", sa.Integer(), nullable=True),
        sa.Column("owner", sa.String(100), nullable=True),
        *_versioned_columns(),
        sa.CheckConstraint("length(name) BETWEEN 1 AND 200", name=op.f("ck_authors_name_length")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_authors")),
    )
    op.create_index(op.f("ix_authors_owner"), "authors", ["owner"])
    for table in DEMO:
        _raw(
            f"CREATE TRIGGER {table}_bump_version BEFORE UPDATE ON public.{table} "
            "FOR EACH ROW EXECUTE FUNCTION rowcast.bump_version_v1()"
        )
        _raw(f"SELECT rowcast.enable_capture('public.{table}')")


def downgrade() -> None:
    for table in DEMO:
        op.drop_table(table)
    _raw("DROP SCHEMA rowcast CASCADE")
