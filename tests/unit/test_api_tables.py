"""Resources for reflected tables: kinds from column types, names, keys and what a client may set."""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from rowcast.api.fields import Field, FieldError, Limits
from rowcast.api.reflect import _writable
from rowcast.api.resources import Resource
from sqlalchemy.dialects import postgresql

from rowcast.errors import ConfigError
from rowcast.settings import from_env


def table(*columns: sa.Column[Any], schema: str | None = "public", name: str = "orders") -> sa.Table:
    return sa.Table(name, sa.MetaData(), *columns, schema=schema)


def field(type_: Any, **options: Any) -> Field:
    column = sa.Column("c", type_, **options)
    table(sa.Column("id", sa.Integer, primary_key=True), column)
    return Field.from_column(column, Limits())


@pytest.mark.parametrize(
    ("type_", "kind"),
    [
        (postgresql.BIGINT(), "integer"),
        (postgresql.NUMERIC(12, 2), "numeric"),
        (postgresql.DOUBLE_PRECISION(), "float"),
        (postgresql.VARCHAR(10), "text"),
        (postgresql.TEXT(), "text"),
        (postgresql.BOOLEAN(), "boolean"),
        (postgresql.DATE(), "date"),
        (postgresql.TIMESTAMP(timezone=True), "timestamp"),
        (postgresql.UUID(), "uuid"),
        (postgresql.JSONB(), "json"),
        (postgresql.ARRAY(sa.Text), "other"),
        (postgresql.INET(), "other"),
    ],
)
def test_each_column_type_has_a_kind(type_: Any, kind: str) -> None:
    assert field(type_).kind == kind


def test_values_are_parsed_by_kind() -> None:
    assert field(postgresql.NUMERIC()).from_json("12.50") == Decimal("12.50")
    assert field(postgresql.NUMERIC()).from_json(Decimal("0.1")) == Decimal("0.1")
    assert field(postgresql.BIGINT()).from_json(Decimal("12.0")) == 12
    assert str(field(postgresql.UUID()).from_json("12345678-1234-5678-1234-567812345678")).endswith("5678")
    assert (
        field(postgresql.TIMESTAMP()).from_json("2024-01-01T12:00:00+02:00").isoformat()
        == "2024-01-01T10:00:00"
    )
    for type_, value, message in [
        (postgresql.BIGINT(), Decimal("1e999999999"), "must be an integer"),
        (postgresql.NUMERIC(), "1e", "is not a number"),
        (postgresql.NUMERIC(), True, "must be a number"),
        (postgresql.DOUBLE_PRECISION(), Decimal("1e400"), "out of range"),
        (postgresql.DATE(), 20240101, "must be a date string"),
        (postgresql.VARCHAR(2), "abc", "at most 2"),
    ]:
        with pytest.raises(FieldError, match=message):
            field(type_).from_json(value)


def test_values_are_written_as_json() -> None:
    assert field(postgresql.NUMERIC()).to_json(Decimal("NaN")) == "NaN"
    assert field(postgresql.DOUBLE_PRECISION()).to_json(float("-inf")) == "-Infinity"
    assert field(postgresql.INET()).to_json(ipaddress.ip_address("10.0.0.1")) == "10.0.0.1"
    assert field(postgresql.ARRAY(sa.Text)).to_json(["a", "b"]) == ["a", "b"]


def test_generated_identity_serial_and_version_columns_are_read_only() -> None:
    columns = {
        "identity": sa.Column("identity", sa.BigInteger, sa.Identity()),
        "generated": sa.Column("generated", sa.Integer, sa.Computed("1")),
        "serial": sa.Column("serial", sa.Integer, server_default=sa.text("nextval('s'::regclass)")),
        "version": sa.Column("version", sa.Integer),
        "plain": sa.Column("plain", sa.Integer, server_default="0"),
    }
    assert {name for name, c in columns.items() if _writable(c)} == {"plain"}


def test_names_paths_titles_and_key_parameters() -> None:
    lines = Resource(
        table(
            sa.Column("order_id", sa.Integer, primary_key=True),
            sa.Column("line no", sa.Integer, primary_key=True),
            name="order_lines",
        ),
        writable={},
    )
    assert (lines.name, lines.qualified, lines.title) == ("order_lines", "public.order_lines", "OrderLines")
    assert lines.item_path == "/api/order_lines/{key1}/{key2}"
    q1 = Resource(table(sa.Column("code", sa.Text, primary_key=True), schema="sales", name="Q1"), writable={})
    assert (q1.path, q1.item_path, q1.qualified) == (
        '/api/sales."Q1"',
        '/api/sales."Q1"/{code}',
        'sales."Q1"',
    )


def test_a_table_without_a_primary_key_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a primary key"):
        Resource(table(sa.Column("x", sa.Integer)), writable={})


def test_api_tables_parse_with_postgres_name_rules() -> None:
    settings = from_env({"ROWCAST_AUTH": "open", "ROWCAST_API_TABLES": 'orders, sales."a,b" ,'})
    assert settings.api_tables == ("orders", 'sales."a,b"')
    with pytest.raises(ConfigError, match="ROWCAST_API_TABLES, --table"):
        from_env({"ROWCAST_AUTH": "open", "ROWCAST_API_TABLES": "a.b.c"})
