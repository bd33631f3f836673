"""Resource declarations: a model, its writable columns, and what may be filtered and sorted.

Routes, validation, queries and the OpenAPI document are all derived from these declarations,
so exposing another table is a model plus a `Resource(...)` here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase

from api.fields import Field, Limits
from db.models import Author, Book


@dataclass(frozen=True)
class Resource:
    model: type[DeclarativeBase]
    # Writable columns and their limits; every other column is read-only.
    writable: Mapping[str, Limits]
    # Columns usable in filters and `sort`; all columns when not given.
    filterable: Sequence[str] | None = None
    sortable: Sequence[str] | None = None
    singular: str = ""

    def __post_init__(self) -> None:
        columns = set(self.table.columns.keys())
        for group in (self.writable, self.filterable or (), self.sortable or ()):
            unknown = set(group) - columns
            if unknown:
                raise ValueError(f"{self.name}: no such column(s): {sorted(unknown)}")
        if len(self.table.primary_key.columns) != 1:
            raise ValueError(f"{self.name}: the API needs a single-column primary key")
        if "version" not in columns:
            raise ValueError(f"{self.name}: the API needs a `version` column for ETags")

    @property
    def table(self) -> sa.Table:
        table = self.model.__table__
        assert isinstance(table, sa.Table)
        return table

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def title(self) -> str:
        """Singular, capitalised: the OpenAPI schema name ('Book')."""
        return self.singular or self.model.__name__

    @property
    def path(self) -> str:
        return f"/api/{self.name}"

    @property
    def key(self) -> sa.Column[Any]:
        return next(iter(self.table.primary_key.columns))

    @cached_property
    def fields(self) -> dict[str, Field]:
        return {c.name: Field.from_column(c, self.writable.get(c.name)) for c in self.table.columns}

    @cached_property
    def filter_fields(self) -> dict[str, Field]:
        names = self.filterable if self.filterable is not None else list(self.fields)
        return {n: self.fields[n] for n in names}

    @cached_property
    def sort_fields(self) -> dict[str, Field]:
        names = self.sortable if self.sortable is not None else list(self.fields)
        return {n: self.fields[n] for n in names}

    def to_json(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {name: f.to_json(row[name]) for name, f in self.fields.items()}


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
