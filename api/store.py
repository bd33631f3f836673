"""The API's SQL, as SQLAlchemy Core over a resource's table: values are always bound parameters.

Reads of a list run in one REPEATABLE READ READ ONLY transaction that also returns its snapshot
(the cursor). Writes run in a transaction stamped with the actor and request id, which the
capture trigger copies into `rowcast.changes`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from rowcast.api import listing
from rowcast.api.preconditions import IfMatch
from rowcast.api.resources import ETAG, Resource
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

Row = dict[str, Any]
Scope = Mapping[str, Any]
Key = tuple[Any, ...]  # a primary key's values, in the key's column order

# set_config(..., true) is SET LOCAL with parameters (SET LOCAL itself cannot take them).
_STAMP = sa.text(
    "SELECT set_config('rowcast.actor', :actor, true), set_config('rowcast.request_id', :request_id, true), "
    "set_config('lock_timeout', :lock_timeout, true)"
)
# A psql session that keeps a row locked must not park API writers (and their pooled
# connections) forever: they give up after this and the client gets a 503 to retry.
LOCK_TIMEOUT = "5s"


@dataclass(frozen=True)
class Stamp:
    actor: str
    request_id: str


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    cursor: str
    total: int


@dataclass(frozen=True)
class Outcome:
    """A conditional write: `row` if it happened; else `current` (None: no such row in scope)."""

    row: Row | None
    current: Row | None = None


def _scoped(resource: Resource, scope: Scope) -> list[sa.ColumnElement[bool]]:
    return [resource.table.c[column] == value for column, value in scope.items()]


def _by_key(resource: Resource, key: Key, scope: Scope) -> list[sa.ColumnElement[bool]]:
    return [*(c == v for c, v in zip(resource.keys, key, strict=True)), *_scoped(resource, scope)]


def _row_columns(resource: Resource) -> list[sa.ColumnElement[Any]]:
    """Every column of the table and, under ETAG, the row's concurrency token."""
    return [*resource.table.c, resource.etag.label(ETAG)]


async def list_page(engine: AsyncEngine, resource: Resource, query: listing.ListQuery, scope: Scope) -> Page:
    table = resource.table
    conditions = [*listing.where(resource, query.conditions), *_scoped(resource, scope)]
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        async with conn.begin():
            # First statement: it fixes the transaction's snapshot, which the cursor then names.
            cursor = (
                await conn.execute(sa.select(sa.cast(sa.func.pg_current_snapshot(), sa.Text)))
            ).scalar_one()
            total = (
                await conn.execute(sa.select(sa.func.count()).select_from(table).where(*conditions))
            ).scalar_one()
            select = (
                sa.select(*_row_columns(resource))
                .where(*conditions)
                .order_by(*listing.order_by(resource, query.sort))
                .limit(query.limit)
                .offset(query.offset)
            )
            rows = [dict(r) for r in (await conn.execute(select)).mappings()]
    return Page(rows, str(cursor), int(total))


async def get(engine: AsyncEngine, resource: Resource, key: Key, scope: Scope) -> Row | None:
    async with engine.connect() as conn:
        return await _current(conn, resource, key, scope)


async def insert(engine: AsyncEngine, resource: Resource, values: Mapping[str, Any], stamp: Stamp) -> Row:
    values = {**_first_version(resource), **values}
    statement = sa.insert(resource.table).values(values).returning(*_row_columns(resource))
    async with _writing(engine, stamp) as conn:
        return dict((await conn.execute(statement)).mappings().one())


async def update(
    engine: AsyncEngine,
    resource: Resource,
    key: Key,
    values: Mapping[str, Any],
    match: IfMatch,
    scope: Scope,
    stamp: Stamp,
) -> Outcome:
    # The version check is part of the UPDATE itself, so two writers can never both pass it.
    statement = (
        sa.update(resource.table)
        .where(*_by_key(resource, key, scope), *_version(resource, match))
        .values({**values, **_next_version(resource)})
        .returning(*_row_columns(resource))
    )
    async with _writing(engine, stamp) as conn:
        row = (await conn.execute(statement)).mappings().one_or_none()
        if row is not None:
            return Outcome(dict(row))
        return Outcome(None, await _current(conn, resource, key, scope))


async def delete(
    engine: AsyncEngine, resource: Resource, key: Key, match: IfMatch, scope: Scope, stamp: Stamp
) -> Outcome:
    statement = (
        sa.delete(resource.table)
        .where(*_by_key(resource, key, scope), *_version(resource, match))
        .returning(*_row_columns(resource))
    )
    async with _writing(engine, stamp) as conn:
        row = (await conn.execute(statement)).mappings().one_or_none()
        if row is not None:
            return Outcome(dict(row))
        return Outcome(None, await _current(conn, resource, key, scope))


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))


@asynccontextmanager
async def _writing(engine: AsyncEngine, stamp: Stamp) -> AsyncIterator[AsyncConnection]:
    async with engine.begin() as conn:
        stamped = {"actor": stamp.actor, "request_id": stamp.request_id, "lock_timeout": LOCK_TIMEOUT}
        await conn.execute(_STAMP, stamped)
        yield conn


def _version(resource: Resource, match: IfMatch) -> list[sa.ColumnElement[bool]]:
    if match.force:
        return []
    tags = sorted(match.versions)
    if resource.version is None:
        # xmin is compared as text: Postgres has no cast from xid to a number.
        return [resource.etag.in_([str(t) for t in tags])]
    # A tag beyond the column's type was never issued (and binding it would be an SQL error).
    _, top = resource.fields[resource.version.name].bounds or (0, 0)
    return [resource.etag.in_([t for t in tags if t <= top])]


def _first_version(resource: Resource) -> dict[str, Any]:
    """1 for a `version` column the database would not fill itself."""
    version = resource.version
    if version is None or resource.fields[version.name].has_default:
        return {}
    return {version.name: 1}


def _next_version(resource: Resource) -> dict[str, Any]:
    """Every API update bumps `version`, so the ETag changes even where no trigger bumps it.

    Where one does (the demo tables' rowcast.bump_version_v1), it sets OLD + 1 itself: the same.
    """
    version = resource.version
    return {} if version is None else {version.name: version + 1}


async def _current(conn: AsyncConnection, resource: Resource, key: Key, scope: Scope) -> Row | None:
    select = sa.select(*_row_columns(resource)).where(*_by_key(resource, key, scope))
    row = (await conn.execute(select)).mappings().one_or_none()
    return None if row is None else dict(row)
