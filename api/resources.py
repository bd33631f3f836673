"""Resource declarations: a table, its writable columns, and what may be filtered and sorted.

Routes, validation, queries and the OpenAPI document are all derived from these declarations.
The demo tables are declared here from their models; the tables an operator chooses to serve
(`ROWCAST_API_TABLES`) are reflected from the database at start-up (api.reflect) into the same
`Resource`, so both go through one set of handlers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from rowcast.api.fields import Field, Limits
from rowcast.db.models import Author, Book
from sqlalchemy.orm import DeclarativeBase

from rowcast import names

# The concurrency token a row carries under this key in what api.store returns.
ETAG = "_rowcast_etag"
_ROUTE_PARAMETER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,30}")


@dataclass(frozen=True)
class Resource:
    # A model (the demo tables) or a reflected table (the ones an operator serves).
    source: type[DeclarativeBase] | sa.Table
    # Writable columns and their limits; every other column is read-only.
    writable: Mapping[str, Limits]
    # Columns usable in filters and `sort`; all columns of comparable types when not given.
    filterable: Sequence[str] | None = None
    sortable: Sequence[str] | None = None
    singular: str = ""

    def __post_init__(self) -> None:
        columns = set(self.table.columns.keys())
        for group in (self.writable, self.filterable or (), self.sortable or ()):
            unknown = set(group) - columns
            if unknown:
                raise ValueError(f"{self.name}: no such column(s): {sorted(unknown)}")
        if not self.table.primary_key.columns:
            raise ValueError(f"{self.name}: the API needs a primary key to address rows")

    @property
    def reflected(self) -> bool:
        """Served by choice and read from the catalog: its constraints are the database's alone."""
        return isinstance(self.source, sa.Table)

    @property
    def table(self) -> sa.Table:
        table = self.source if isinstance(self.source, sa.Table) else self.source.__table__
        assert isinstance(table, sa.Table)
        return table

    @cached_property
    def name(self) -> str:
        """The table as Postgres would read it, `public.` left out: `orders`, `sales."Q1"`."""
        schema = self.table.schema or names.DEFAULT_SCHEMA
        if schema == names.DEFAULT_SCHEMA:
            return names.ident(self.table.name)
        return names.canonical(schema, self.table.name)

    @property
    def qualified(self) -> str:
        """The key grants, scopes and the notifier use: `public.orders`."""
        return names.qualify(self.name)

    @property
    def title(self) -> str:
        """Singular, capitalised: the OpenAPI schema name ('Book')."""
        if self.singular:
            return self.singular
        if self.reflected:
            return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", self.name) if p)
        assert not isinstance(self.source, sa.Table)
        return self.source.__name__

    @property
    def path(self) -> str:
        return f"/api/{self.name}"

    @property
    def keys(self) -> tuple[sa.Column[Any], ...]:
        """The primary key's columns, in the key's order: the URL of a row names them in turn."""
        return tuple(self.table.primary_key.columns)

    @cached_property
    def key_parameters(self) -> tuple[str, ...]:
        """The route's name for each key column: the column's own name when a route can carry it."""
        given = [c.name for c in self.keys]
        if all(_ROUTE_PARAMETER.fullmatch(n) for n in given):
            return tuple(given)
        return tuple(f"key{i}" for i in range(1, len(given) + 1))

    @property
    def item_path(self) -> str:
        return self.path + "".join(f"/{{{p}}}" for p in self.key_parameters)

    @property
    def version(self) -> sa.Column[Any] | None:
        """The integer `version` column that is the ETag, if the table has one."""
        column = self.table.columns.get("version")
        return column if column is not None and isinstance(column.type, sa.Integer) else None

    @cached_property
    def etag(self) -> sa.ColumnElement[Any]:
        """What a row's ETag is: its `version`, else its `xmin` (which every write renews)."""
        if self.version is not None:
            return self.version
        return sa.cast(sa.column("xmin", _selectable=self.table), sa.Text)

    @cached_property
    def fields(self) -> dict[str, Field]:
        return {c.name: Field.from_column(c, self.writable.get(c.name)) for c in self.table.columns}

    @cached_property
    def filter_fields(self) -> dict[str, Field]:
        return self._chosen(self.filterable)

    @cached_property
    def sort_fields(self) -> dict[str, Field]:
        return self._chosen(self.sortable)

    def to_json(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {name: f.to_json(row[name]) for name, f in self.fields.items()}

    def key_of(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(row[c.name] for c in self.keys)

    def _chosen(self, columns: Sequence[str] | None) -> dict[str, Field]:
        if columns is None:
            return {n: f for n, f in self.fields.items() if f.comparable}
        return {n: self.fields[n] for n in columns}


BOOKS = Resource(
    Book,
    writable={
        "title": Limits(min_length=1),  # CHECK title_length
        "author": Limits(),
        "num_pages": Limits(minimum=1, maximum=100_000),  # CHECK num_pages_range
        "owner": Limits(),
    },
)

AUTHORS = Resource(
    Author,
    writable={"name": Limits(min_length=1), "born": Limits(), "owner": Limits()},  # CHECK name_length
)

RESOURCES: tuple[Resource, ...] = (BOOKS, AUTHORS)
