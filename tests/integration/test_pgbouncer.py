"""rowcast behind Debian's PgBouncer in transaction pooling mode: the API through the pooler, the
notifier's own connections (LISTEN, log reads, replays) straight to Postgres (ROWCAST_LISTEN_URL).

In transaction mode each transaction may run on another server connection, so nothing may live in
a session between transactions: not a LISTEN, not a SET, not a server-side prepared statement.
PgBouncer learned to track prepared statements in 1.21 (`max_prepared_statements`); Debian 12 ships
1.18, and psycopg prepares a query on the server once it has run it 5 times on a connection.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import sqlalchemy as sa
from rowcast.api.app import make_engine

from tests.integration.test_cli import rowcast
from tests.integration.test_stack import NGINX, start_stack
from tests.pg import Server
from tests.pgbouncer import PgBouncer, needs_pgbouncer
from tests.servers import Process, free_port, rowcast_server, ws_connect

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


async def test_notifier_listens_directly_while_writes_go_through_the_pooler(
    bouncer: PgBouncer, db_url: str
) -> None:
    """api and notifier both get DATABASE_URL = PgBouncer; the notifier's --listen-url is direct
    (with the pooler alone it refuses to start: tests/reliability/test_pgbouncer.py)."""
    pooled = bouncer.url(db_url)
    async with (
        rowcast_server("api", pooled, QUIET, "--auth", "open") as api,
        rowcast_server("notifier", pooled, QUIET, "--auth", "open", "--listen-url", db_url) as notifier,
        aiohttp.ClientSession() as http,
    ):
        # A cursor from the API's REPEATABLE READ list read, made through the pooler.
        async with http.get(api.base + "/api/books?limit=1") as r:
            assert r.status == 200, await r.text()
            cursor = (await r.json())["cursor"]
        async with http.post(api.base + "/api/books", json={"title": "before subscribing"}) as r:
            assert r.status == 201, await r.text()
        async with ws_connect(notifier.base) as client:
            # Resuming from that cursor replays what the notifier has not sent this client yet.
            sub = await client.subscribe(ref="r", cursor=cursor)
            assert sub["type"] == "subscribed", sub
            replayed = await client.until(lambda f: f["type"] == "change", timeout=5)
            assert replayed["row"]["title"] == "before subscribing"
            # Live: an API write through the pooler, then a plain psycopg write through it.
            async with http.post(api.base + "/api/books", json={"title": "via the api"}) as r:
                assert r.status == 201, await r.text()
            change = await client.until(lambda f: f["type"] == "change", timeout=5)
            assert (change["row"]["title"], change["actor"]["app"]) == ("via the api", "api")
            # Any client behind transaction pooling turns psycopg's prepared statements off, as the API does.
            async with await psycopg.AsyncConnection.connect(
                pooled, autocommit=True, prepare_threshold=None
            ) as conn:
                for n in range(ROUNDS):
                    await conn.execute("INSERT INTO books (title) VALUES (%s)", (f"psycopg {n}",))
            titles = [
                (await client.until(lambda f: f["type"] == "change", timeout=5))["row"]["title"]
                for _ in range(ROUNDS)
            ]
            assert titles == [f"psycopg {n}" for n in range(ROUNDS)]
        log = notifier.stop() + api.stop()
    assert "Traceback" not in log, log[-3000:]


def test_migrate_installs_a_fresh_database_through_the_pooler(bouncer: PgBouncer, pg_server: Server) -> None:
    """`rowcast migrate --roles` (as compose and `rowcast stack` run it, on DATABASE_URL) and the
    demo tables, on an empty database, all through transaction pooling."""
    with pg_server.database(None) as url:
        env = {"DATABASE_URL": bouncer.url(url)}
        for argv in (("migrate", "--roles"), ("demo", "install"), ("capture", "verify")):
            done = rowcast(*argv, env=env)
            assert done.returncode == 0, f"rowcast {' '.join(argv)}: {done.stdout}{done.stderr}"
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM rowcast.alembic_version").fetchone()
        assert row == (1,)


async def test_up_serves_its_api_through_the_pooler_and_listens_directly(
    bouncer: PgBouncer, db_url: str
) -> None:
    """`rowcast up`: migrations and the API on DATABASE_URL (the pooler), the notifier on --listen-url."""
    pooled = bouncer.url(db_url)
    async with (
        rowcast_server("up", pooled, QUIET, "--listen-url", db_url) as up,
        aiohttp.ClientSession() as http,
        ws_connect(up.base) as client,
    ):
        assert (await client.subscribe())["type"] == "subscribed"
        for r in range(ROUNDS // 2):
            rounds = await asyncio.gather(*(crud_round(http, up.base, r * 4 + i) for i in range(4)))
            assert not [p for found in rounds for p in found]
        created = await client.until(lambda f: f["type"] == "change", timeout=5)
        assert created["op"] == "insert" and created["actor"]["app"] == "api"
        log = up.stop()
    assert "Traceback" not in log, log[-3000:]


async def test_up_with_only_the_pooler_refuses_naming_the_listen_url(bouncer: PgBouncer, db_url: str) -> None:
    """What `rowcast notifier` does (tests/reliability/test_pgbouncer.py), `rowcast up` does too."""
    up = Process(["up", "--port", str(free_port()), "--database-url", bouncer.url(db_url)], QUIET).start()
    assert up.proc is not None
    try:
        code: int | None = await asyncio.to_thread(up.proc.wait, 40)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        up.stop()
        output = up.output()
        up.close()
    assert code not in (None, 0), output
    assert "PgBouncer in transaction mode" in output and "ROWCAST_LISTEN_URL" in output, output
    assert "Traceback" not in output, output


@pytest.mark.skipif(
    NGINX is None, reason="Debian's nginx is not installed (apt-get install nginx; .ci/run does it)"
)
async def test_stack_runs_migrate_and_api_through_the_pooler_and_notifiers_direct(
    bouncer: PgBouncer, db_url: str, tmp_path: Path
) -> None:
    pooled = bouncer.url(db_url)
    stack = start_stack(
        {"DATABASE_URL": pooled, "ROWCAST_LISTEN_URL": db_url}, tmp_path / "stack.log", "--auth", "open"
    )
    try:
        async with aiohttp.ClientSession() as http, ws_connect(stack.base) as client:
            assert (await client.subscribe())["type"] == "subscribed"
            problems = []
            for r in range(ROUNDS // 2):
                rounds = await asyncio.gather(*(crud_round(http, stack.base, r * 4 + i) for i in range(4)))
                problems += [p for found in rounds for p in found]
            assert not problems, problems[:3]
            with psycopg.connect(pooled, autocommit=True, prepare_threshold=None) as conn:
                conn.execute("INSERT INTO books (title) VALUES ('through the pooler')")
            change = await client.until(
                lambda f: f["type"] == "change" and f["row"] and f["row"]["title"] == "through the pooler",
                timeout=10,
            )
            assert change["op"] == "insert"
    finally:
        stack.proc.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(stack.proc.wait, 60)
    assert code == 0, stack.output()[-3000:]
