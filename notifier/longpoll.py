"""Long-poll transport `/changes`: plain HTTP for API clients; the cursor makes it stateless."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping

import psycopg
from aiohttp import web

from notifier.access import principal_for
from notifier.hub import Session, Subscription, dumps, encode_view
from notifier.outbox import Outbox
from notifier.replay import CursorExpired, current_snapshot, page
from notifier.service import ProtocolError
from notifier.snapshot import BadCursor
from notifier.sse import subscription_frame
from notifier.state import NOTIFIER
from rowcast.auth import AuthError

MAX_WAIT = 60.0
MAX_LIMIT = 10_000


def _number(query: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ProtocolError("bad_value", f"{name} must be a number") from None
    if not low <= value <= high:
        raise ProtocolError("bad_value", f"{name} must be between {low:g} and {high:g}")
    return value


async def changes(request: web.Request) -> web.Response:
    notifier = request.app[NOTIFIER]
    try:
        principal = principal_for(request, notifier.settings)
    except AuthError as exc:
        return web.json_response({"error": "unauthorized", "message": str(exc)}, status=401)
    session = Session(principal, Outbox(1, 1), lambda code, reason: None)
    try:
        spec = await notifier.parse(session, subscription_frame(request.query, request.query.get("cursor")))
        wait = _number(request.query, "wait", 25.0, 0.0, MAX_WAIT)
        limit = int(_number(request.query, "limit", 1000, 1, MAX_LIMIT))
    except ProtocolError as exc:
        status = 403 if exc.code == "forbidden" else 400
        return web.json_response({"error": exc.code, "message": exc.message}, status=status)
    sub = Subscription(
        spec.ref, session, spec.table.qualified, spec.table.pk, spec.filter, spec.columns, spec.mode
    )
    table = (spec.table.schema, spec.table.name)
    try:
        if spec.cursor is None:
            now = await current_snapshot(notifier.pool)
            return web.json_response({"changes": [], "cursor": str(now), "more": False})
        cursor = spec.cursor
        deadline = time.monotonic() + wait
        while True:
            # Register before querying, so a change committed in between still wakes us.
            waiter = notifier.hub.add_waiter(spec.table.qualified)
            try:
                events, cursor, more = await page(notifier.pool, cursor, table, limit)
                bodies = [
                    encode_view(e, variant, sub.columns)
                    for e in events
                    if (variant := sub.variant(e)) is not None
                ]
                remaining = deadline - time.monotonic()
                if bodies or more or remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        await waiter.wait()
                except TimeoutError:
                    pass
            finally:
                notifier.hub.remove_waiter(spec.table.qualified, waiter)
    except CursorExpired as exc:
        return web.json_response({"error": "resync_required", "message": str(exc)}, status=410)
    except BadCursor as exc:
        return web.json_response({"error": "bad_cursor", "message": str(exc)}, status=400)
    except psycopg.Error:
        return web.json_response(
            {"error": "unavailable", "message": "the database is unavailable"}, status=503
        )
    notifier.messages_out["longpoll"].inc(len(bodies))
    text = (
        '{"changes":['
        + ",".join(bodies)
        + '],"cursor":'
        + dumps(str(cursor))
        + ',"more":'
        + json.dumps(more)
        + "}"
    )
    return web.Response(text=text, content_type="application/json")
