"""The captured tables and their columns: what a subscription may name."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool
from rowcast.db import queries
from rowcast.notifier.schema import TableChange

from rowcast import names
from rowcast.auth import qualify

_QUERY = queries.sql("catalog_columns")


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    pk: tuple[str, ...]
    columns: dict[str, str]  # column -> pg_type.typcategory

    @property
    def qualified(self) -> str:
        return names.canonical(self.schema, self.name)


class Catalog:
    """Loaded on demand; reloaded when a name is not found (at most once a second)."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool
        self._tables: dict[str, TableInfo] = {}
        self._loaded_at = 0.0

    async def get(self, table: str) -> TableInfo | None:
        name = qualify(table)
        info = self._tables.get(name)
        if info is None and time.monotonic() - self._loaded_at > 1.0:
            await self.reload()
            info = self._tables.get(name)
        return info

    def apply(self, change: TableChange) -> None:
        """A DDL the log recorded (notifier/schema.py): the catalog follows without a reload."""
        tables = dict(self._tables)
        if change.old_key is not None:
            tables.pop(change.old_key, None)
        if change.dropped:
            tables.pop(change.key, None)
        else:
            tables[change.key] = TableInfo(change.schema, change.table, change.pk, dict(change.columns))
        self._tables = tables

    async def reload(self) -> None:
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(_QUERY)).fetchall()
        tables: dict[str, TableInfo] = {}
        for schema, name, pk, column, category in rows:
            key = names.canonical(schema, name)
            if key not in tables:
                tables[key] = TableInfo(schema, name, tuple(pk), {})
            tables[key].columns[column] = category
        self._tables = tables
        self._loaded_at = time.monotonic()
