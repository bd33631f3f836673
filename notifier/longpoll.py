"""Long-poll transport `/changes`: plain HTTP for API clients; the cursor makes it stateless."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping

import psycopg
from aiohttp import web
from rowcast.notifier.access import admit, json_error
from rowcast.notifier.events import Event
from rowcast.notifier.hub import View, dumps, encode_view
from rowcast.notifier.replay import CursorExpired, Scan, current_snapshot
from rowcast.notifier.service import Notifier, ProtocolError, Spec
from rowcast.notifier.snapshot import BadCursor, Snapshot
from rowcast.notifier.sse import subscription_frame
from rowcast.notifier.state import LONGPOLLS, NOTIFIER

from rowcast.auth import Principal

MAX_WAIT = 60.0
MAX_LIMIT = 10_000
EXPIRY_MARGIN = 0.05  # seconds a poll waits past its token's expiry before answering 401


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


def _deadline(principal: Principal, wait: float) -> float:
    """When to stop waiting: after `wait` seconds, or just after the token expires if sooner.

    Just after (EXPIRY_MARGIN): the loop's timer and the wall clock `exp` is read on differ a
    little, and the expiry check that follows must see the token expired, never answer empty.
    """
    left = principal.seconds_left()
    return time.monotonic() + (wait if left is None else max(0.0, min(wait, left + EXPIRY_MARGIN)))


def _expired(principal: Principal) -> bool:
    left = principal.seconds_left()
    return left is not None and left <= 0


async def changes(request: web.Request) -> web.Response:
    """Admission (token, long-polls in flight per subject and in all), then the poll itself."""
    notifier = request.app[NOTIFIER]
    limiter = request.app[LONGPOLLS]
    admitted = admit(request, notifier.settings, limiter)
    if isinstance(admitted, web.Response):
        return admitted
    principal = admitted
    try:
        return await _poll(request, notifier, principal)
    finally:
        limiter.release(principal)


async def _poll(request: web.Request, notifier: Notifier, principal: Principal) -> web.Response:
    try:
        spec = await notifier.parse(principal, subscription_frame(request.query, request.query.get("cursor")))
        wait = _number(request.query, "wait", 25.0, 0.0, MAX_WAIT)
        limit = int(_number(request.query, "limit", 1000, 1, MAX_LIMIT))
    except ProtocolError as exc:
        return json_error(403 if exc.code == "forbidden" else 400, exc.code, exc.message)
    view = View(spec.ref, principal, spec.table.qualified, spec.table.pk, spec.filter, spec.columns)
    try:
        if spec.cursor is None:
            now = await current_snapshot(notifier.pool)
            return web.json_response({"changes": [], "cursor": str(now), "more": False})
        scan = await _wait_for_changes(notifier, view, spec, spec.cursor, _deadline(principal, wait), limit)
    except CursorExpired as exc:
        return json_error(410, "resync_required", str(exc))
    except BadCursor as exc:
        return json_error(400, "bad_cursor", str(exc))
    except psycopg.Error:
        return json_error(503, "unavailable", "the database is unavailable")
    if _expired(principal):
        # Whatever was read, it is answered after the token's expiry: nothing goes out on it.
        return json_error(401, "token_expired", "the token expired while the poll waited; renew it")
    notifier.messages_out["longpoll"].inc(len(scan.bodies))
    text = (
        '{"changes":['
        + ",".join(scan.bodies)
        + '],"cursor":'
        + dumps(str(scan.cursor))
        + ',"more":'
        + json.dumps(scan.more)
        + "}"
    )
    return web.Response(text=text, content_type="application/json")


async def _wait_for_changes(
    notifier: Notifier, sub: View, spec: Spec, cursor: Snapshot, deadline: float, limit: int
) -> Scan:
    """Read a page; while it is empty and says nothing more is waiting, wait for the table's next
    change until `deadline`. No connection is held while waiting."""
    table = (spec.table.schema, spec.table.name)

    def view(event: Event) -> str | None:
        variant = sub.variant(event)  # scope first, then filter: before the page is counted or cut
        return None if variant is None else encode_view(event, variant, sub.columns)

    subject = sub.principal.sub
    budget = notifier.settings.longpoll_scan_budget
    while True:
        # Register before querying, so a change committed in between still wakes us.
        waiter = notifier.hub.add_waiter(spec.table.qualified)
        try:
            scan = await notifier.reads.scan(subject, cursor, table, view, limit, budget)
            remaining = deadline - time.monotonic()
            if scan.bodies or scan.more or remaining <= 0:
                return scan
            cursor = scan.cursor
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await waiter.wait()
        finally:
            notifier.hub.remove_waiter(spec.table.qualified, waiter)
