"""The aiohttp side of the API: `setup` adds it to any app, `create_app` makes an app of its own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from aiohttp import web
from rowcast.api import openapi, reflect, store
from rowcast.api.middleware import api_middleware
from rowcast.api.resources import RESOURCES, Resource
from rowcast.api.state import DOCUMENT, ENGINE, SETTINGS, TABLES
from rowcast.api.views import ResourceView
from rowcast.db.urls import sqlalchemy_url
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from rowcast import hosts, jsonexact
from rowcast.auth import qualify
from rowcast.settings import Settings

log = logging.getLogger("rowcast.api")

APPLICATION_NAME = "api"  # change events read "<actor> via api"
HEALTH_TIMEOUT = 3.0


def create_app(settings: Settings) -> web.Application:
    """A new aiohttp app serving only the API."""
    app = web.Application()
    setup(app, settings)
    return app


def setup(app: web.Application, settings: Settings, resources: Iterable[Resource] = RESOURCES) -> None:
    """Add the API under /api to `app`: routes, its middleware, and a database engine for its lifetime.

    The tables of `settings.api_tables` (and its declaration file) get their routes when the app starts, once the engine
    can reflect them (aiohttp takes routes until then).
    """
    resources = tuple(resources)
    app[SETTINGS] = settings
    hosts.install(app, settings)
    app.middlewares.append(api_middleware(settings))
    app.cleanup_ctx.append(_engine_context(settings))
    app.router.add_get("/api/healthz", healthz, allow_head=False)
    app.router.add_get("/api/openapi.json", describe, allow_head=False)
    serve(app, resources)


def serve(app: web.Application, resources: Sequence[Resource]) -> None:
    """Route `resources` (besides any served already) and describe them all in the document."""
    before: dict[str, Resource] = app[TABLES] if TABLES in app else {}
    served = {**before, **{qualify(r.name): r for r in resources}}
    for resource in resources:
        ResourceView(resource).add_routes(app)
    app[TABLES] = served
    app[DOCUMENT] = openapi.document(served.values(), app[SETTINGS])


async def describe(request: web.Request) -> web.Response:
    return web.json_response(request.app[DOCUMENT])


async def healthz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            await store.ping(request.app[ENGINE])
    except Exception as exc:  # any failure to answer SELECT 1 means "not ready", never a 500
        log.warning("health check failed: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return web.json_response(
            {"status": "unavailable", "error": "unavailable", "message": "the database does not answer"},
            status=503,
        )
    return web.json_response({"status": "ok"})


def make_engine(url: str) -> AsyncEngine:
    engine = create_async_engine(
        sqlalchemy_url(url),
        connect_args={"application_name": APPLICATION_NAME, "connect_timeout": 10},
        pool_pre_ping=True,  # a restarted Postgres costs one reconnect, not one failed request
        # jsonb values keep their numbers' every digit, both ways (as the notifier's events do).
        json_serializer=jsonexact.dumps,
        json_deserializer=jsonexact.loads,
    )
    event.listen(engine.sync_engine, "connect", _no_prepared_statements_behind_a_pooler)
    return engine


def behind_a_pooler(dbapi_connection: Any) -> bool:
    """Whether this connection reaches Postgres through a pooler such as PgBouncer: the backend
    pid the server reports differs from the one in the connection's BackendKeyData, which a
    pooler makes up (it routes cancel requests itself)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT pg_backend_pid()")
        row = cursor.fetchone()
    finally:
        cursor.close()
    dbapi_connection.rollback()  # the query began a transaction: end it, as a new connection has none
    return bool(row[0] != dbapi_connection.driver_connection.info.backend_pid)


def _no_prepared_statements_behind_a_pooler(dbapi_connection: Any, _record: Any) -> None:
    """psycopg prepares a query on the server from its 5th run on a connection. Behind a
    transaction-pooling PgBouncer (before 1.21 and its max_prepared_statements) the next
    transaction may run on another server connection, where that statement is missing or
    another client's holds its name: requests fail with "prepared statement ... does not exist /
    already exists". Behind any pooler the API's connections prepare nothing; connected directly
    they keep the saved parse and plan (README: Behind PgBouncer)."""
    if behind_a_pooler(dbapi_connection):
        dbapi_connection.driver_connection.prepare_threshold = None


async def _reflected(app: web.Application, settings: Settings) -> list[Resource]:
    """The resources of the tables chosen by name and in the declaration file."""
    file = settings.api_tables_file
    declarations = reflect.load_declarations(file) if file is not None else {}
    return await reflect.reflect(app[ENGINE], settings.api_tables, app[TABLES].values(), declarations)


def _engine_context(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def engine(app: web.Application) -> AsyncIterator[None]:
        url = settings.database_url
        if url is None:  # the composition (rowcast.commands) resolves it
            raise ValueError("the API needs settings.database_url")
        app[ENGINE] = make_engine(url)
        try:
            if settings.api_tables or settings.api_tables_file:
                serve(app, await _reflected(app, settings))
            yield
        finally:
            await app[ENGINE].dispose()

    return engine
