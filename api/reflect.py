"""The operator's tables (`ROWCAST_API_TABLES`, `rowcast api --table`), reflected into resources.

Read from the catalog once, when the API starts: what Postgres says about a column (type, NOT
NULL, default, identity, generated) becomes its validation, so there is no model to keep in step.
A table the API cannot serve stops the start with one line naming the table and the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rowcast.api.fields import Limits
from rowcast.api.resources import Resource
from sqlalchemy.exc import NoSuchTableError
from sqlalchemy.ext.asyncio import AsyncEngine

from rowcast import names
from rowcast.errors import ConfigError

# Paths the API answers itself: a table whose URL would be one of them cannot be served.
RESERVED_PATHS = frozenset({"/api/healthz", "/api/openapi.json"})
_OPTIONS = ("filter", "sort", "read_only")


@dataclass(frozen=True)
class Declaration:
    """What a declaration file narrows for one table; None keeps the default (every comparable column)."""

    filterable: tuple[str, ...] | None = None
    sortable: tuple[str, ...] | None = None
    read_only: tuple[str, ...] = ()


def load_declarations(path: Path) -> dict[str, Declaration]:
    """`{"orders": {"filter": [...], "sort": [...], "read_only": [...]}, "order_lines": {}}`, by table key."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"ROWCAST_API_TABLES_FILE {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"ROWCAST_API_TABLES_FILE {path} is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"ROWCAST_API_TABLES_FILE {path}: expected an object of {{table: options}}")
    try:
        return {names.qualify(table): _declaration(table, options) for table, options in raw.items()}
    except names.BadName as exc:
        raise ConfigError(f"ROWCAST_API_TABLES_FILE {path}: {exc}") from None


def _declaration(table: str, options: Any) -> Declaration:
    if not isinstance(options, dict) or set(options) - set(_OPTIONS):
        raise ConfigError(f"declaration of {table}: give an object with any of {', '.join(_OPTIONS)}")
    lists = {key: _columns(table, key, options[key]) for key in _OPTIONS if key in options}
    return Declaration(lists.get("filter"), lists.get("sort"), lists.get("read_only", ()))


def _columns(table: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"declaration of {table}: {key} must be a list of column names")
    return tuple(value)


async def reflect(
    engine: AsyncEngine,
    tables: Iterable[str],
    served: Iterable[Resource],
    declarations: Mapping[str, Declaration] | None = None,
) -> list[Resource]:
    """A resource for each named (or declared) table not already `served`, in the order named."""
    declared = declarations or {}
    taken = {r.qualified for r in served}
    named = [*(names.qualify(t) for t in tables), *declared]
    wanted = [n for n in dict.fromkeys(named) if n not in taken]
    if not wanted:
        return []
    async with engine.connect() as conn:
        found = [await conn.run_sync(_load, name) for name in wanted]
    resources = [
        _resource(table, declared.get(name, Declaration())) for name, table in zip(wanted, found, strict=True)
    ]
    _check_titles([*served, *resources])
    return resources


def _load(conn: sa.Connection, name: str) -> sa.Table:
    schema, table = names.parse(name)
    try:
        # resolve_fks=False: a referenced table is not served, so needs neither reading nor a grant.
        return sa.Table(table, sa.MetaData(), schema=schema, autoload_with=conn, resolve_fks=False)
    except NoSuchTableError:
        raise ConfigError(f"cannot serve {name}: no such table (or this role may not see it)") from None


def _resource(table: sa.Table, declared: Declaration) -> Resource:
    name = names.canonical(table.schema or names.DEFAULT_SCHEMA, table.name)
    if not table.primary_key.columns:
        raise ConfigError(f"cannot serve {name}: it has no primary key, so its rows have no URL")
    unknown = set(declared.read_only) - set(table.columns.keys())
    writable = {c.name: Limits() for c in table.columns if _writable(c) and c.name not in declared.read_only}
    try:
        if unknown:
            raise ValueError(f"{name}: no such column(s): {sorted(unknown)}")
        resource = Resource(table, writable, filterable=declared.filterable, sortable=declared.sortable)
    except ValueError as exc:  # its message starts with the table's name: said once is enough
        raise ConfigError(f"cannot serve {name} as declared: {str(exc).partition(': ')[2]}") from None
    listed = {*(declared.filterable or ()), *(declared.sortable or ())}
    uncomparable = sorted(c for c in listed if not resource.fields[c].comparable)
    if uncomparable:
        raise ConfigError(f"cannot serve {name} as declared: cannot filter or sort by {uncomparable}")
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
