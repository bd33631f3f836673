"""rowcast behind Debian's PgBouncer in transaction pooling mode: the API through the pooler.

In transaction mode each transaction may run on another server connection, so nothing may live in
a session between transactions: not a LISTEN, not a SET, not a server-side prepared statement.
PgBouncer learned to track prepared statements in 1.21 (`max_prepared_statements`); Debian 12 ships
1.18, and psycopg prepares a query on the server once it has run it 5 times on a connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from api.app import make_engine
from tests.pg import Server
from tests.pgbouncer import PgBouncer, needs_pgbouncer
from tests.servers import rowcast_server

pytestmark = needs_pgbouncer

# psycopg prepares a statement on the server from its 5th execution on one connection.
ROUNDS = 12
CONCURRENCY = 16
# No access log: a process's output waits in a pipe until it exits, and a full pipe blocks it.
QUIET = {"ROWCAST_LOG_LEVEL": "WARNING"}


@pytest.fixture
def bouncer(pg_server: Server) -> Iterator[PgBouncer]:
    # Fewer server connections than the API's pool may open: client connections share them.
    bouncer = PgBouncer(pg_server, "transaction", pool_size=3)
    yield bouncer
    bouncer.close()


async def crud_round(http: aiohttp.ClientSession, base: str, n: int) -> list[str]:
    """Create, read, patch, list and delete one book; returns what went wrong, if anything."""
    problems: list[str] = []

    async def call(method: str, path: str, expect: int, **kwargs: Any) -> Any:
        async with http.request(method, base + path, **kwargs) as r:
            body = await r.read()
            if r.status != expect:
                problems.append(f"{method} {path}: {r.status} {body[:300]!r}")
                return None
            return await r.json() if body else None

    book = await call("POST", "/api/books", 201, json={"title": f"pooled {n}", "num_pages": n + 1})
    if book is None:
        return problems
    path = f"/api/books/{book['id']}"
    await call("GET", path, 200)
    await call("PATCH", path, 200, json={"num_pages": n + 2}, headers={"If-Match": '"1"'})
    await call("GET", "/api/books?limit=5", 200)
    await call("DELETE", path, 204, headers={"If-Match": '"2"'})
    return problems


async def test_the_api_serves_crud_many_times_over_through_transaction_pooling(
    bouncer: PgBouncer, db_url: str
) -> None:
    async with (
        rowcast_server("api", bouncer.url(db_url), QUIET, "--auth", "open") as api,
        aiohttp.ClientSession() as http,
    ):
        problems: list[str] = []
        for r in range(ROUNDS):
            batch = (crud_round(http, api.base, r * CONCURRENCY + i) for i in range(CONCURRENCY))
            try:
                async with asyncio.timeout(20):
                    rounds = await asyncio.gather(*batch)
            except TimeoutError:
                problems.append(f"round {r + 1} of {ROUNDS} did not finish within 20 s")
                break
            problems += [p for found in rounds for p in found]
        log = api.stop()
    errors = sorted({line for line in log.splitlines() if line.startswith("psycopg.errors.")})
    assert not problems, f"{len(problems)} failed requests, e.g. {problems[:3]}; the API logged {errors}"
    assert not errors, errors


async def prepared_after_runs(url: str, runs: int) -> tuple[list[str], bool]:
    """Run one query `runs` times on one API connection: the statements then prepared on the
    server, and whether the connection counted itself behind a pooler."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            for i in range(runs):
                await conn.execute(sa.text("SELECT CAST(:n AS int) + 1"), {"n": i})
            rows = await conn.execute(sa.text("SELECT statement FROM pg_prepared_statements"))
            raw = await conn.get_raw_connection()
            return [r[0] for r in rows], raw.driver_connection.prepare_threshold is None  # type: ignore[union-attr]
    finally:
        await engine.dispose()


async def test_the_api_prepares_statements_directly_and_none_behind_a_pooler(
    bouncer: PgBouncer, db_url: str
) -> None:
    direct, direct_off = await prepared_after_runs(db_url, ROUNDS)
    assert not direct_off and any("CAST($1 AS int)" in s for s in direct), direct
    pooled, pooled_off = await prepared_after_runs(bouncer.url(db_url), ROUNDS)
    assert pooled_off and pooled == [], pooled
