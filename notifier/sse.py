"""Server-Sent Events transport `/sse`: one subscription per stream, resumable by Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from rowcast.notifier.access import admit, json_error
from rowcast.notifier.outbox import Frame
from rowcast.notifier.service import Notifier, ProtocolError, run_writer
from rowcast.notifier.state import ACCESS, NOTIFIER, STREAMS

from rowcast import jsoninput
from rowcast.wire import Close


def subscription_frame(query: Any, cursor: str | None) -> dict[str, Any]:
    """A subscribe frame from query parameters (shared with long-poll)."""
    frame: dict[str, Any] = {"ref": query.get("ref", "sse"), "table": query.get("table")}
    if query.get("schema") is not None:
        frame["schema"] = query["schema"]
    if query.get("where"):
        try:
            frame["where"] = jsoninput.parse(query["where"], exact=True)  # operands compare exactly
        except jsoninput.JSONInputError as exc:
            raise ProtocolError("bad_json", f"where must be URL-encoded JSON: {exc}") from None
    if query.get("columns"):
        frame["columns"] = [c for c in query["columns"].split(",") if c]
    if query.get("mode"):
        frame["mode"] = query["mode"]
    if cursor:
        frame["cursor"] = cursor
    return frame


def encode(frame: Frame) -> bytes:
    head = f"event: {frame.kind}\n"
    if frame.sse_id is not None:
        head += f"id: {frame.sse_id}\n"
    return (head + f"data: {frame.data}\n\n").encode()


async def sse(request: web.Request) -> web.StreamResponse:
    app = request.app
    notifier: Notifier = app[NOTIFIER]
    settings = notifier.settings
    limiter = app[ACCESS]
    admitted = admit(request, settings, limiter)
    if isinstance(admitted, web.Response):
        return admitted
    principal = admitted
    closing: dict[str, Any] = {}
    done = asyncio.Event()

    def on_close(code: int | None, reason: str) -> None:
        if code is not None:  # None: the stream is already gone
            closing.update(code=code, reason=reason)
        done.set()

    session = notifier.open_session(principal, on_close, "sse")
    app[STREAMS].add(done)
    try:
        cursor = request.headers.get("Last-Event-ID") or request.query.get("cursor")
        try:
            spec = await notifier.parse(session.principal, subscription_frame(request.query, cursor))
        except ProtocolError as exc:
            status = 403 if exc.code == "forbidden" else 400
            return json_error(status, exc.code, exc.message)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache, no-transform",
                "X-Accel-Buffering": "no",  # tell nginx not to buffer the stream
            }
        )
        await response.prepare(request)
        await response.write(b"retry: 1000\n\n")

        async def write(batch: list[Frame]) -> None:
            await response.write(b"".join(encode(f) for f in batch))
            notifier.messages_out["sse"].inc(len(batch))

        async def keepalive() -> None:
            while True:
                await asyncio.sleep(settings.heartbeat)
                await response.write(b": ka\n\n")

        sub = notifier.begin(session, spec)
        tasks = [
            asyncio.create_task(notifier.complete(sub, spec), name="rowcast-sse-subscribe"),
            asyncio.create_task(run_writer(session, write), name="rowcast-sse-writer"),
            asyncio.create_task(keepalive(), name="rowcast-sse-keepalive"),
            asyncio.create_task(done.wait(), name="rowcast-sse-done"),
        ]
        seconds = principal.seconds_left()
        if seconds is not None:
            tasks.append(asyncio.create_task(asyncio.sleep(max(seconds, 0)), name="rowcast-sse-expiry"))
        finished, _ = await asyncio.wait(tasks[1:], return_when=asyncio.FIRST_COMPLETED)
        if seconds is not None and tasks[-1] in finished and not closing:
            closing.update(code=Close.AUTH, reason="token expired")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if closing:
            frame = json.dumps({"type": "close", "code": closing["code"], "reason": closing["reason"]})
            try:
                await response.write(f"event: close\ndata: {frame}\n\n".encode())
            except (ConnectionError, RuntimeError):
                pass
        return response
    finally:
        session.closed = True
        notifier.close_session(session, "sse")
        limiter.release(principal)
        app[STREAMS].discard(done)
