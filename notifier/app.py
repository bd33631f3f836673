"""The notifier's aiohttp application: `setup()` mounts it on any app, `create_app()` runs it alone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import psycopg
from aiohttp import web
from psycopg_pool import AsyncConnectionPool
from rowcast.notifier.access import ConnectionLimiter, LongPollLimiter
from rowcast.notifier.catalog import Catalog
from rowcast.notifier.events import Event
from rowcast.notifier.hub import Hub
from rowcast.notifier.listener import Listener, event_lag_seconds
from rowcast.notifier.longpoll import changes
from rowcast.notifier.metrics import Metrics
from rowcast.notifier.presence import Presence
from rowcast.notifier.retention import prune_forever
from rowcast.notifier.service import Notifier
from rowcast.notifier.source import PgChangeSource
from rowcast.notifier.sse import sse
from rowcast.notifier.standby import Standby
from rowcast.notifier.state import ACCESS, LISTENER, LONGPOLLS, NOTIFIER, SOCKETS, STREAMS, WORKER
from rowcast.notifier.status import (
    HEALTH,
    Health,
    heartbeat_forever,
    operator_denied,
    refresh_database_facts,
    status_endpoint,
)
from rowcast.notifier.ws import websocket, write_through

from rowcast import hosts
from rowcast.settings import Settings, redact
from rowcast.wire import Close, error

log = logging.getLogger("rowcast.notifier")

LAG_SAMPLE = 8  # observe the end-to-end lag of one event in eight


def _database_url(settings: Settings) -> str:
    """ROWCAST_LISTEN_URL, else DATABASE_URL (the composition resolves the embedded one). Every
    connection of the notifier uses it: the LISTEN one needs a session, and the pool's (log reads,
    replays, presence, retention) run the same statements many times a second, which psycopg
    prepares on the server; neither survives a transaction pooler (README: Behind PgBouncer)."""
    url = settings.notifier_url
    if url is None:  # the composition (rowcast.commands) resolves it
        raise ValueError("the notifier needs settings.database_url")
    return url


def setup(app: web.Application, settings: Settings) -> None:
    """Add the notifier's routes and lifecycle to `app`."""
    url = _database_url(settings)
    app[SOCKETS] = set()
    app[STREAMS] = set()
    app[ACCESS] = ConnectionLimiter(settings.max_connections_per_subject)
    app[LONGPOLLS] = LongPollLimiter(settings.max_longpolls_per_subject, settings.max_longpolls)
    hosts.install(app, settings)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[object, ...]]] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=8,
            open=False,
            kwargs={"autocommit": True, "application_name": "rowcast-notifier"},
            name="rowcast-notifier",
        )
        await pool.open(wait=False)
        # A hot standby for the log's rows (ROWCAST_READ_URL, notifier/standby.py): window reads,
        # replays, long-poll pages and the catalog. Snapshots, LISTEN, the doorbell, presence
        # (an unlogged table: not on a standby) and pruning stay on the primary.
        standby: Standby | None = None
        read_pool = pool
        if settings.read_url is not None:
            read_pool = AsyncConnectionPool(
                settings.read_url,
                min_size=1,
                max_size=8,
                open=False,
                kwargs={"autocommit": True, "application_name": "rowcast-notifier-read"},
                name="rowcast-notifier-read",
            )
            await read_pool.open(wait=False)
            standby = Standby(read_pool, pool, settings.read_timeout)
            log.info("reading the change log's rows from the standby %s", redact(settings.read_url))
        metrics = Metrics()
        health = Health(settings, metrics)
        app[HEALTH] = health
        hub = Hub(settings.client_checkpoint_interval)

        seen = 0

        def observe(event: Event) -> None:
            nonlocal seen
            metrics.events_in.inc()
            seen += 1
            if seen % LAG_SAMPLE == 1 or LAG_SAMPLE == 1:
                # Sampled: reading `at` parses an event the fan-out may otherwise never parse.
                lag = event_lag_seconds(event)
                if lag is not None:
                    metrics.lag.observe(max(lag, 0.0))
                    health.lag.add(max(lag, 0.0))

        listener = Listener(
            PgChangeSource(url, pool, standby=standby),
            hub,
            poll_interval=settings.poll_interval,
            on_event=observe,
            on_reconnect=metrics.reconnects.inc,
            on_failure=lambda part: metrics.failures.labels(part).inc(),
            on_read=health.read_done,
            on_wakeup=metrics.wakeups.inc,
            write_through=write_through,
        )
        catalog = Catalog(read_pool)
        presence = Presence(
            pool, hub, catalog, settings.max_presence_rows, timeout=settings.presence_timeout
        )
        notifier = Notifier(settings, pool, hub, catalog, metrics, listener.started, presence, standby)
        app[NOTIFIER] = notifier
        app[LISTENER] = listener
        run = asyncio.create_task(listener.run(), name="rowcast-listener")
        tasks = [
            run,
            asyncio.create_task(prune_forever(pool, settings.retention), name="rowcast-retention"),
            asyncio.create_task(presence.run(), name="rowcast-presence"),
            asyncio.create_task(heartbeat_forever(app, health, pool), name="rowcast-heartbeat"),
        ]
        # Give the first LISTEN a moment: a pooler that breaks LISTEN is refused at startup.
        # A database that is simply down is not fatal: we serve, report 503, and keep trying.
        ready = asyncio.create_task(listener.listening.wait())
        await asyncio.wait([ready, run], timeout=settings.startup_wait, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if listener.fatal is not None:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await pool.close()
            if standby is not None:
                await read_pool.close()
            raise listener.fatal
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await presence.close()
            hub.close()
            await pool.close()
            if standby is not None:
                await read_pool.close()

    async def close_clients(app: web.Application) -> None:
        """Graceful shutdown: every socket gets 1001 Going Away, every SSE stream ends."""
        streams: set[asyncio.Event] = app[STREAMS]
        for done in tuple(streams):
            done.set()
        open_sockets: set[web.WebSocketResponse] = app[SOCKETS]
        sockets = tuple(open_sockets)
        await asyncio.gather(
            *(ws.close(code=Close.GOING_AWAY, message=b"server shutting down") for ws in sockets),
            return_exceptions=True,
        )

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(close_clients)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/sse", sse)
    app.router.add_get("/changes", changes)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/status.json", status_endpoint)


async def healthz(request: web.Request) -> web.Response:
    """Ready only while wake-ups arrive and the log can be read; otherwise 503 saying what is down."""
    listener = request.app[LISTENER]
    body = listener.status()
    if WORKER in request.app:  # each worker answers for itself only: say which one did
        body["worker"] = request.app[WORKER]
    if listener.fatal is not None:
        return web.json_response(
            {"status": "failed", **error("unavailable", str(listener.fatal)), **body}, status=503
        )
    if not listener.ready:
        return web.json_response({"status": "unavailable", **body}, status=503)
    return web.json_response({"status": "ok", **body})


async def metrics_endpoint(request: web.Request) -> web.Response:
    notifier = request.app[NOTIFIER]
    # Counts of clients and events are not for everyone: in token mode a token with the metrics
    # grant (`rowcast token --metrics`) may read them.
    denied = operator_denied(request, notifier.settings)
    if denied is not None:
        return denied
    listener = request.app[LISTENER]
    m = notifier.metrics
    m.listening.set(1 if listener.ready else 0)
    m.subscriptions.set(notifier.hub.subscription_count)
    try:
        await refresh_database_facts(notifier.pool, m)
    except (psycopg.Error, TimeoutError) as exc:
        log.debug("database facts unavailable: %s", exc)
    return web.Response(body=m.render(), content_type="text/plain", charset="utf-8")


def create_app(settings: Settings) -> web.Application:
    app = web.Application()
    setup(app, settings)
    return app
