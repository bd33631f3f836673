"""The operator's tables (`ROWCAST_API_TABLES`, `rowcast api --table`), reflected into resources.

Read from the catalog once, when the API starts: what Postgres says about a column (type, NOT
NULL, default, identity, generated) becomes its validation, so there is no model to keep in step.
A table the API cannot serve stops the start with one line naming the table and the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import NoSuchTableError
from sqlalchemy.ext.asyncio import AsyncEngine

from api.fields import Limits
from api.resources import Resource
from rowcast import names
from rowcast.errors import ConfigError

# Paths the API answers itself: a table whose URL would be one of them cannot be served.
RESERVED_PATHS = frozenset({"/api/healthz", "/api/openapi.json"})


async def reflect(engine: AsyncEngine, tables: Iterable[str], served: Iterable[Resource]) -> list[Resource]:
    """A resource for each named table not already `served`, in the order named."""
    taken = {r.qualified for r in served}
    wanted = [n for n in dict.fromkeys(names.qualify(t) for t in tables) if n not in taken]
    if not wanted:
        return []
    async with engine.connect() as conn:
        found = [await conn.run_sync(_load, name) for name in wanted]
    resources = [_resource(table) for table in found]
    _check_titles([*served, *resources])
    return resources


def _load(conn: sa.Connection, name: str) -> sa.Table:
    schema, table = names.parse(name)
    try:
        # resolve_fks=False: a referenced table is not served, so needs neither reading nor a grant.
        return sa.Table(table, sa.MetaData(), schema=schema, autoload_with=conn, resolve_fks=False)
    except NoSuchTableError:
        raise ConfigError(f"cannot serve {name}: no such table (or this role may not see it)") from None


def _resource(table: sa.Table) -> Resource:
    name = names.canonical(table.schema or names.DEFAULT_SCHEMA, table.name)
    if not table.primary_key.columns:
        raise ConfigError(f"cannot serve {name}: it has no primary key, so its rows have no URL")
    resource = Resource(table, writable={c.name: Limits() for c in table.columns if _writable(c)})
    if resource.path in RESERVED_PATHS or any(ch in resource.name for ch in "/{}%"):
        raise ConfigError(f"cannot serve {name}: its URL {resource.path} is not usable; rename the table")
    return resource


def _writable(column: sa.Column[Any]) -> bool:
    """What a client may set: not what the database generates, nor the `version` the API bumps."""
    default = column.server_default
    generated = (
        column.identity is not None
        or column.computed is not None
        or (isinstance(default, sa.DefaultClause) and "nextval(" in str(default.arg))
    )
    concurrency = column.name == "version" and isinstance(column.type, sa.Integer)
    return not (generated or concurrency)


def _check_titles(resources: list[Resource]) -> None:
    """Two tables may not share an OpenAPI schema name (`order_lines` and `"Order Lines"`)."""
    seen: dict[str, str] = {}
    for r in resources:
        if r.title in seen:
            raise ConfigError(
                f"cannot serve both {seen[r.title]} and {r.name}: both would be {r.title} in OpenAPI"
            )
        seen[r.title] = r.name
