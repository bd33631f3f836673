"""WebSocket transport `/ws`: JSON frames in both directions (docs/PROTOCOL.md)."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import WSMsgType, web
from rowcast.notifier.access import SUBPROTOCOL, RateLimiter, admit, json_error
from rowcast.notifier.presence import PresenceError
from rowcast.notifier.service import Notifier, ProtocolError
from rowcast.notifier.state import ACCESS, NOTIFIER, SOCKETS

from rowcast import jsoninput, wire
from rowcast.wire import Close

log = logging.getLogger("rowcast.notifier.ws")

LINGER = 1.0  # seconds a writer task waits for more frames before it ends
# Frames written together wait while this much is still unsent (aiohttp's own writer pauses at
# its transport's high-water mark, 64 KiB): a reader that does not keep up fills its bounded
# outbox instead of the kernel's and our buffers, and gets 4008.
UNSENT_LIMIT = 64 * 1024
_HEAD1 = struct.Struct("!BB").pack
_HEAD2 = struct.Struct("!BBH").pack
_HEAD3 = struct.Struct("!BBQ").pack


def text_frame(data: str) -> bytes:
    """One unmasked, uncompressed WebSocket text frame (RFC 6455 5.2), as a server sends it."""
    payload = data.encode()
    n = len(payload)
    if n < 126:
        return _HEAD1(0x81, n) + payload
    if n < 65536:
        return _HEAD2(0x81, 126, n) + payload
    return _HEAD3(0x81, 127, n) + payload


async def websocket(request: web.Request) -> web.StreamResponse:
    app = request.app
    notifier: Notifier = app[NOTIFIER]
    settings = notifier.settings
    limiter = app[ACCESS]
    ws = web.WebSocketResponse(
        heartbeat=settings.heartbeat,
        max_msg_size=settings.max_frame_bytes,
        protocols=(SUBPROTOCOL,),
        compress=False,
        # Pings and pongs come to the read loop below: each one tells presence the socket lives
        # (a silent one loses its presence within ROWCAST_PRESENCE_TIMEOUT, notifier/presence.py).
        autoping=False,
    )
    if not ws.can_prepare(request).ok:
        # A plain GET (or a broken handshake) gets a JSON answer, before any slot is taken.
        if request.headers.get("Upgrade", "").lower() != "websocket":
            refusal = json_error(426, "upgrade_required", "/ws speaks WebSocket: send Upgrade: websocket")
            refusal.headers["Upgrade"] = "websocket"  # what a 426 must name (RFC 9110)
            return refusal
        return json_error(400, "bad_handshake", "the WebSocket handshake headers are invalid")
    admitted = admit(request, settings, limiter)
    if isinstance(admitted, web.Response):
        return admitted
    principal = admitted
    # Memory per idle client is dominated by tasks and their frames: the handler itself reads,
    # the writer exists only while frames are queued, and token expiry is a timer.
    closers: list[asyncio.Task[None]] = []
    tasks: list[asyncio.Task[Any]] = []  # subscribe/replay tasks (a list: an empty set costs 4x)

    def on_close(code: int | None, reason: str) -> None:
        if not closers:
            closers.append(asyncio.create_task(_close(ws, request, code, reason), name="rowcast-ws-close"))

    session = notifier.open_session(principal, on_close, "ws")
    if notifier.presence is not None:
        notifier.presence.attach(session, ws.ping)
    app[SOCKETS].add(ws)
    writer = Writer(ws, session, notifier.messages_out["ws"], request.transport)
    expiry: asyncio.TimerHandle | None = None
    try:
        await ws.prepare(request)
        session.outbox.on_ready = writer.start
        writer.start()
        seconds = principal.seconds_left()
        if seconds is not None:
            expiry = asyncio.get_running_loop().call_later(
                max(seconds, 0), session.close, Close.AUTH, "token expired"
            )
        # The handler is the reader (one coroutine frame per idle socket, not two).
        rate = RateLimiter(notifier.settings.max_client_rate)
        presence = notifier.presence
        while True:
            # receive(), not `async for`: an idle socket then holds one coroutine frame less.
            msg = await ws.receive()
            if presence is not None:
                presence.heard(session)
            if msg.type == WSMsgType.PING:  # what autoping would do
                try:
                    await ws.pong(msg.data)
                except ConnectionError:
                    break
                continue
            if msg.type == WSMsgType.PONG:
                continue
            if msg.type != WSMsgType.TEXT:  # CLOSE, CLOSING, CLOSED, ERROR end the loop
                if msg.type == WSMsgType.BINARY:
                    session.send("error", wire.error_frame("bad_frame", "frames must be JSON text"))
                    continue
                break
            if not rate.allow():
                if rate.violations > 3 * rate.capacity:
                    session.close(Close.RATE, "too many messages")
                    break
                session.send("error", wire.error_frame("rate_limited", "too many messages; slow down"))
                continue
            try:
                await _handle(msg.data, notifier, session, tasks)
                if presence is not None:  # frames that came while this one was handled wait unread
                    presence.heard(session)
            except ProtocolError as exc:
                session.send("error", exc.frame())
            except PresenceError as exc:  # marked, so a client tells it from its subscription's errors
                session.send("error", ProtocolError(exc.code, exc.message, exc.ref).frame(about="presence"))
    finally:
        session.closed = True
        if expiry is not None:
            expiry.cancel()
        session.outbox.on_ready = None
        pending = [*writer.tasks, *tasks]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, *closers, return_exceptions=True)
        notifier.close_session(session, "ws")
        limiter.release(principal)
        app[SOCKETS].discard(ws)
        if ws.prepared and not ws.closed:
            await ws.close()
    return ws


class Writer:
    """Writes a session's outbox to its socket.

    The common case needs no task: the first frame queued for a client schedules `flush` on the
    loop, which runs after the rest of the window has been queued and writes everything queued
    for this client in one write, as a broadcast loop would. A task (`drain`) takes over only
    while the socket has more than UNSENT_LIMIT unsent (a slow reader), and ends after LINGER
    seconds without frames.
    """

    __slots__ = ("draining", "loop", "out", "scheduled", "session", "tasks", "transport", "ws")

    def __init__(
        self, ws: web.WebSocketResponse, session: Any, out: Any, transport: asyncio.Transport | None = None
    ) -> None:
        self.ws = ws
        self.session = session
        self.out = out
        self.transport = transport
        self.scheduled = False
        self.loop = asyncio.get_running_loop()
        self.tasks: list[asyncio.Task[None]] = []
        # A drain task runs (set when it is created, cleared as it ends): a plain attribute, read
        # on every frame queued (a property that asked the task was 2% of the notifier's CPU).
        self.draining = False

    def start(self) -> None:
        """Frames were queued: flush them soon (once per burst, however many were queued), or
        now while the last change of a window fans out (`write_through`)."""
        if self.draining:
            return  # the draining task will take them
        if self.loop in _THROUGH and self.transport is not None:
            self.flush()  # with whatever this burst queued before; a due flush then finds none
            return
        if self.scheduled:
            return  # a flush is due
        if self.transport is None:
            self._start_task()
            return
        self.scheduled = True
        # One callback per burst for every client, not one per client: a Handle per client per
        # change was the notifier's largest allocation, and the collector's runs landed on it.
        loop = self.loop
        due = _DUE.get(loop)
        if due is None:
            due = _DUE[loop] = []
            loop.call_soon(_flush_due, loop)
        due.append(self)

    def _start_task(self) -> None:
        if not self.draining:
            self.draining = True
            self.tasks[:] = [asyncio.create_task(self.drain(), name="rowcast-ws-writer")]

    def flush(self) -> None:
        self.scheduled = False
        session = self.session
        outbox = session.outbox
        transport = self.transport
        if session.closed or not outbox.frames or transport is None or self.draining:
            return
        if transport.is_closing():
            session.close(None, "connection lost")  # no close frame: 1006 is never sent
            return
        if transport.get_write_buffer_size() > UNSENT_LIMIT:
            self._start_task()  # the reader lags: write as it drains, and let the outbox bound it
            return
        batch = outbox.take()
        if batch:
            _write(transport, batch)
            self.out.inc(len(batch))
        if outbox.frames:  # more than one take's worth: the rest as the socket drains
            self._start_task()

    async def drain(self) -> None:
        """Write queued frames; end after LINGER seconds with nothing to write.

        An idle socket then holds no writer task, while a busy one keeps its task instead of
        creating one per burst (task creation showed up as a third of server CPU at low rates).
        """
        session = self.session
        outbox = session.outbox
        try:
            while not session.closed:
                if outbox.frames:
                    batch = outbox.take()
                else:
                    # None: idle for LINGER. A frame queued meanwhile found this task still
                    # running (no new writer was started for it) and was taken by get_within;
                    # nothing awaits between its check and the task's end, so none slips in.
                    waited = await outbox.get_within(LINGER)
                    if waited is None:
                        return
                    batch = waited
                if self.transport is None:  # a socket without a transport (unit tests' fakes)
                    for frame in batch:
                        assert frame.data is not None
                        await self.ws.send_str(frame.data)
                else:
                    await _write_drained(self.transport, batch)
                self.out.inc(len(batch))
        except ConnectionError:
            session.close(None, "connection lost")  # no close frame: 1006 is never sent
        finally:
            # Synchronously with the task's end: a frame queued after this starts a new writer.
            self.draining = False


def _write(transport: asyncio.Transport, batch: list[Any]) -> None:
    """A client's queued frames in one write (one send() instead of one per frame). The frames
    are the ones aiohttp would write (compression is off for /ws); its own writes (pongs, the
    close frame) are whole frames too, so the two never interleave inside a frame."""
    transport.write(b"".join([text_frame(frame.data) for frame in batch]))


async def _write_drained(transport: asyncio.Transport, batch: list[Any]) -> None:
    """`_write`, then wait while more than UNSENT_LIMIT is unsent: a lagging reader's frames
    stay in its bounded outbox."""
    if transport.is_closing():
        raise ConnectionResetError("the connection is closing")
    _write(transport, batch)
    while transport.get_write_buffer_size() > UNSENT_LIMIT:
        if transport.is_closing():
            raise ConnectionResetError("the connection is closing")
        await asyncio.sleep(0.005)


# Writers with frames to flush, per event loop (tests run several loops, one per thread).
_DUE: dict[asyncio.AbstractEventLoop, list[Writer]] = {}
# Loops fanning out the last change of a window: writers write as frames are queued.
_THROUGH: set[asyncio.AbstractEventLoop] = set()


@contextmanager
def write_through() -> Iterator[None]:
    """Fan out the last change of a window with each client's frames written as they are queued.

    Deferred to one flush after the fan-out, the first client's write waited for every client's
    frames to be rendered and queued, and every client's latency carried that loop. Nothing more
    of the window is coming, so writing now costs no extra write: the same frames in the same
    writes, each client's sooner (the listener does not use it when a checkpoint follows, so
    that one still goes out in the same write as the change before it).
    """
    loop = asyncio.get_running_loop()
    _THROUGH.add(loop)
    try:
        yield
    finally:
        _THROUGH.discard(loop)


def _flush_due(loop: asyncio.AbstractEventLoop) -> None:
    for writer in _DUE.pop(loop, ()):
        try:
            writer.flush()
        except Exception:  # one socket's surprise must not keep the others' frames queued
            log.exception("writing to a WebSocket failed")
            writer.session.close(None, "connection lost")


async def _close(ws: web.WebSocketResponse, request: web.Request, code: int | None, reason: str) -> None:
    if code is None:  # the connection is gone: nothing to say, nobody to say it to
        if request.transport is not None:
            request.transport.abort()
        return
    try:
        async with asyncio.timeout(10):
            await ws.close(code=code, message=reason.encode()[:120])
    except (TimeoutError, ConnectionError):
        if request.transport is not None:  # the peer is not reading: give up on it
            request.transport.abort()


async def _handle(text: str, notifier: Notifier, session: Any, tasks: list[asyncio.Task[Any]]) -> None:
    try:
        frame = jsoninput.parse(text, exact=True)  # filter operands compare exactly
    except jsoninput.JSONInputError as exc:
        raise ProtocolError("bad_json", f"frame is not valid JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise ProtocolError("bad_frame", "frame must be a JSON object with a 'type'")
    kind = frame.get("type")
    if kind == "subscribe":
        spec = await notifier.parse(session.principal, frame, session.subscriptions)
        sub = notifier.begin(session, spec)
        # Replays run beside the reader so an unsubscribe or ping is not stuck behind them.
        task = asyncio.create_task(notifier.complete(sub, spec), name=f"rowcast-subscribe-{spec.ref}")
        tasks.append(task)
        task.add_done_callback(tasks.remove)
    elif kind == "unsubscribe":
        notifier.unsubscribe(session, frame.get("ref"))
    elif kind == "ping":
        session.send("pong", {})
    elif kind == "presence" and notifier.presence is not None:
        await notifier.presence.announce(session, frame)
    else:
        raise ProtocolError(
            "unknown_type", f"unknown frame type: {kind!r} (subscribe, unsubscribe, presence, ping)"
        )
