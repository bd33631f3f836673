"""This notifier's own facts, its heartbeat row in rowcast.notifiers, and /status.json.

Every notifier process writes one row every HEARTBEAT seconds (db/monitor.py): clients per
transport, subscriptions, delivery lag p50/p99 over the last minute, the NOTIFY queue's usage,
the age of its last read of the change log, the listener's state and its retention setting.
/status.json (any replica, any worker) answers with every table's activity and every notifier's
row, so one URL behind a load balancer shows all replicas.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from aiohttp import web
from psycopg.types.json import Jsonb
from rowcast.db import monitor, queries
from rowcast.notifier.access import json_error, principal_for
from rowcast.notifier.state import LISTENER, NOTIFIER, WORKER

from rowcast.auth import AuthError

if TYPE_CHECKING:
    from rowcast.notifier.listener import Listener
    from rowcast.notifier.metrics import Metrics
    from rowcast.notifier.replay import Pool
    from rowcast.notifier.service import Notifier

    from rowcast.settings import Settings

log = logging.getLogger("rowcast.notifier.status")

WINDOW = 60.0  # seconds of lag samples behind p50/p99
# /status.json answers from one read of the database for this long: the per-table totals read the
# whole log (about 0.6 s for 500,000 rows), and every open /status page asks every 2 s.
STATUS_TTL = 1.5
TRANSPORTS = ("ws", "sse", "longpoll")


class LagWindow:
    """Delivery-lag samples of the last WINDOW seconds, for percentiles of recent traffic only."""

    def __init__(self, window: float = WINDOW, size: int = 4096) -> None:
        self.window = window
        self.samples: deque[tuple[float, float]] = deque(maxlen=size)

    def add(self, lag: float) -> None:
        self.samples.append((time.monotonic(), lag))

    def percentiles(self) -> tuple[float | None, float | None, int]:
        cutoff = time.monotonic() - self.window
        while self.samples and self.samples[0][0] < cutoff:
            self.samples.popleft()
        values = sorted(v for _, v in self.samples)
        if not values:
            return None, None, 0

        def at(q: float) -> float:
            return values[min(len(values) - 1, int(q * len(values)))]

        return at(0.5), at(0.99), len(values)


class Health:
    """What this process knows about itself, for its heartbeat row and /metrics."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.lag = LagWindow()
        self.last_read: float | None = None  # monotonic time of the last successful log read
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.started_at = datetime.now(UTC)
        self.documents: dict[int, tuple[float, dict[str, Any]]] = {}  # minutes -> (read at, document)
        self.reading = asyncio.Lock()
        metrics.last_read_age.set_function(lambda: self.last_read_age() or 0.0)
        metrics.retention.set(settings.retention)

    def read_done(self) -> None:
        self.last_read = time.monotonic()
        self.metrics.reads.inc()

    def last_read_age(self) -> float | None:
        return None if self.last_read is None else time.monotonic() - self.last_read

    def clients(self) -> dict[str, int]:
        registry = self.metrics.registry
        return {
            t: int(registry.get_sample_value("rowcast_connections", {"transport": t}) or 0)
            for t in TRANSPORTS
        }

    def stats(self, notifier: Notifier, listener: Listener, worker: int | None) -> dict[str, Any]:
        p50, p99, samples = self.lag.percentiles()
        clients = self.clients()
        age = self.last_read_age()
        usage = self.metrics.registry.get_sample_value("rowcast_pg_notification_queue_usage")
        return {
            "clients": sum(clients.values()),
            "clients_by_transport": clients,
            "subscriptions": notifier.hub.subscription_count,
            "lag_p50_ms": None if p50 is None else round(p50 * 1000, 2),
            "lag_p99_ms": None if p99 is None else round(p99 * 1000, 2),
            "lag_samples": samples,
            "notify_queue_usage": usage,
            "last_read_age_seconds": None if age is None else round(age, 3),
            "listening": listener.listening.is_set(),
            "reading": listener.reading,
            "mode": listener.mode,
            "problems": listener.status().get("problems", {}),
            "retention_seconds": self.settings.retention,
            "events_in": self.metrics.registry.get_sample_value("rowcast_events_in_total") or 0,
            "worker": worker,
        }


async def refresh_database_facts(pool: Pool, metrics: Metrics) -> None:
    """The gauges that come from the database: NOTIFY queue, log size, oldest change's age."""
    async with asyncio.timeout(2), pool.connection(timeout=2) as conn:
        row = await (
            await conn.execute(queries.sql("notifier_database_facts"))
        ).fetchone()
    if row is not None:
        metrics.queue_usage.set(float(row[0]))
        metrics.log_bytes.set(float(row[1]))
        metrics.log_oldest_age.set(float(row[2] or 0.0))


async def heartbeat_forever(app: web.Application, health: Health, pool: Pool) -> None:
    """Upsert this process's row every HEARTBEAT seconds; delete it on the way out."""
    notifier = app[NOTIFIER]
    listener = app[LISTENER]
    worker = app.get(WORKER)
    warned = False
    try:
        while True:
            try:
                await refresh_database_facts(pool, health.metrics)
                stats = health.stats(notifier, listener, worker)
                async with asyncio.timeout(2), pool.connection(timeout=2) as conn:
                    await conn.execute(
                        queries.sql("notifier_heartbeat"),
                        (health.id, socket.gethostname(), os.getpid(), health.started_at, Jsonb(stats)),
                    )
                    await conn.execute(queries.sql("notifier_forget_old"), (monitor.FORGET,))
                warned = False
            except psycopg.errors.UndefinedTable:
                if not warned:
                    log.warning(
                        "rowcast.notifiers is missing: run `rowcast migrate` (status shows no notifiers)"
                    )
                warned = True
            except (psycopg.Error, TimeoutError, OSError) as exc:
                log.debug("heartbeat failed: %s", exc)
            await asyncio.sleep(monitor.HEARTBEAT)
    finally:
        try:
            async with asyncio.timeout(2), pool.connection(timeout=2) as conn:
                await conn.execute(queries.sql("notifier_leave"), (health.id,))
        except (psycopg.Error, TimeoutError, OSError) as exc:
            log.debug("could not remove the heartbeat row: %s", exc)


def operator_denied(request: web.Request, settings: Settings) -> web.Response | None:
    """In token mode only a token with the metrics grant sees /metrics and /status.json."""
    if settings.auth != "token":
        return None
    try:
        principal = principal_for(request, settings)
    except AuthError as exc:
        return json_error(401, "unauthorized", str(exc))
    if not principal.metrics:
        return json_error(403, "forbidden", "this token lacks the metrics grant (rowcast token --metrics)")
    return None


async def status_endpoint(request: web.Request) -> web.Response:
    notifier = request.app[NOTIFIER]
    denied = operator_denied(request, notifier.settings)
    if denied is not None:
        return denied
    raw = request.query.get("minutes", str(monitor.MINUTES))
    if not raw.isdigit() or not 1 <= int(raw) <= 120:
        return json_error(400, "bad_value", "minutes must be a whole number from 1 to 120")
    health: Health = request.app[HEALTH]
    minutes = int(raw)
    async with health.reading:  # one read at a time; who waited gets its result
        cached = health.documents.get(minutes)
        if cached is not None and time.monotonic() - cached[0] < STATUS_TTL:
            body = cached[1]
        else:
            try:
                async with asyncio.timeout(10), notifier.pool.connection(timeout=5) as conn:
                    body = await monitor.acollect(conn, minutes, notifier.settings.retention)
            except (psycopg.Error, TimeoutError) as exc:
                log.warning("status unavailable: %s", exc)
                return json_error(
                    503, "unavailable", f"the database is unavailable: {exc.__class__.__name__}"
                )
            body["self"] = health.id
            health.documents[minutes] = (time.monotonic(), body)
    return web.json_response(body, headers={"Cache-Control": "no-store"})


HEALTH: web.AppKey[Health] = web.AppKey("rowcast_health")
