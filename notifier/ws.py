"""WebSocket transport `/ws`: JSON frames in both directions (docs/PROTOCOL.md)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from notifier.access import SUBPROTOCOL, RateLimiter, origin_allowed, principal_for
from notifier.outbox import Frame
from notifier.service import Notifier, ProtocolError, run_writer
from notifier.state import ACCESS, NOTIFIER, SOCKETS
from rowcast.auth import AuthError

log = logging.getLogger("rowcast.notifier.ws")

CLOSE_AUTH = 4001
CLOSE_SLOW = 4008
CLOSE_RATE = 4029


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


async def websocket(request: web.Request) -> web.StreamResponse:
    app = request.app
    notifier: Notifier = app[NOTIFIER]
    settings = notifier.settings
    if not origin_allowed(request, settings):
        return json_error(403, "origin_not_allowed", "this Origin may not open rowcast sockets")
    try:
        principal = principal_for(request, settings)
    except AuthError as exc:
        return json_error(401, "unauthorized", str(exc))
    limiter = app[ACCESS]
    if not limiter.acquire(principal):
        return json_error(429, "too_many_connections", f"at most {limiter.limit} connections per subject")

    ws = web.WebSocketResponse(
        heartbeat=settings.heartbeat,
        max_msg_size=settings.max_frame_bytes,
        protocols=(SUBPROTOCOL,),
        compress=False,
    )
    closing: dict[str, Any] = {}
    closed = asyncio.Event()

    def on_close(code: int, reason: str) -> None:
        closing.update(code=code, reason=reason)
        closed.set()

    session = notifier.open_session(principal, on_close, "ws")
    app[SOCKETS].add(ws)
    tasks: set[asyncio.Task[Any]] = set()
    try:
        await ws.prepare(request)

        async def write(batch: list[Frame]) -> None:
            for frame in batch:
                assert frame.data is not None
                await ws.send_str(frame.data)
            notifier.metrics.messages_out.labels("ws").inc(len(batch))

        writer = asyncio.create_task(run_writer(session, write), name="rowcast-ws-writer")
        reader = asyncio.create_task(_read(ws, notifier, session, tasks), name="rowcast-ws-reader")
        watchers = [writer, reader, asyncio.create_task(closed.wait(), name="rowcast-ws-closed")]
        seconds = principal.seconds_left()
        if seconds is not None:
            watchers.append(asyncio.create_task(asyncio.sleep(max(seconds, 0)), name="rowcast-ws-expiry"))
        done, pending = await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
        if seconds is not None and watchers[-1] in done and not closing:
            on_close(CLOSE_AUTH, "token expired")
        for task in (*pending, *tasks):
            task.cancel()
        await asyncio.gather(*pending, *tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.debug("websocket task ended: %r", task.exception())
        if closing and not ws.closed:
            await _close(ws, request, closing["code"], closing["reason"])
    finally:
        session.closed = True
        notifier.close_session(session, "ws")
        limiter.release(principal)
        app[SOCKETS].discard(ws)
        if not ws.closed:
            await ws.close()
    return ws


async def _close(ws: web.WebSocketResponse, request: web.Request, code: int, reason: str) -> None:
    try:
        async with asyncio.timeout(10):
            await ws.close(code=code, message=reason.encode()[:120])
    except (TimeoutError, ConnectionError):
        if request.transport is not None:  # the peer is not reading: give up on it
            request.transport.abort()


async def _read(
    ws: web.WebSocketResponse, notifier: Notifier, session: Any, tasks: set[asyncio.Task[Any]]
) -> None:
    limiter = RateLimiter(notifier.settings.max_client_rate)
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            if msg.type == WSMsgType.BINARY:
                session.send("error", {"code": "bad_frame", "message": "frames must be JSON text"})
                continue
            break
        if not limiter.allow():
            if limiter.violations > 3 * limiter.capacity:
                session.close(CLOSE_RATE, "too many messages")
                return
            session.send("error", {"code": "rate_limited", "message": "too many messages; slow down"})
            continue
        try:
            await _handle(msg.data, notifier, session, tasks)
        except ProtocolError as exc:
            session.send("error", exc.frame())


async def _handle(text: str, notifier: Notifier, session: Any, tasks: set[asyncio.Task[Any]]) -> None:
    try:
        frame = json.loads(text)
    except ValueError:
        raise ProtocolError("bad_json", "frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise ProtocolError("bad_frame", "frame must be a JSON object with a 'type'")
    kind = frame.get("type")
    if kind == "subscribe":
        spec = await notifier.parse(session, frame)
        sub = notifier.begin(session, spec)
        # Replays run beside the reader so an unsubscribe or ping is not stuck behind them.
        task = asyncio.create_task(notifier.complete(sub, spec), name=f"rowcast-subscribe-{spec.ref}")
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    elif kind == "unsubscribe":
        notifier.unsubscribe(session, frame.get("ref"))
    elif kind == "ping":
        session.send("pong", {})
    else:
        raise ProtocolError("unknown_type", f"unknown frame type: {kind!r} (subscribe, unsubscribe, ping)")
