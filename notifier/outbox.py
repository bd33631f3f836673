"""A client's bounded queue of encoded frames (count and bytes), with per-row coalescing.

An idle client costs little here: no asyncio.Event (each carries a deque of waiters); the
writer's wake-up is a future created only while it waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Frame:
    kind: str  # change | checkpoint | subscribed | resync_required | error | pong
    data: str | None  # None: superseded (a coalesced or replaced frame), skip it
    sse_id: str | None = None
    key: str | None = None


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class Outbox:
    __slots__ = (
        "_ready",
        "_room",
        "frames",
        "last_checkpoint",
        "max_bytes",
        "max_messages",
        "nbytes",
        "on_ready",
        "overflowed",
        "pending_rows",
    )

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.frames: list[Frame] = []
        self.nbytes = 0
        self.pending_rows: dict[str, Frame] = {}
        self.last_checkpoint: Frame | None = None
        self.overflowed = False
        self._ready: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None
        # Set by a transport that starts its writer on demand instead of keeping one waiting.
        self.on_ready: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def put(self, frame: Frame, *, coalesce: bool = False) -> bool:
        """Queue a frame; False (and `overflowed`) if the bound is exceeded.

        coalesce: replace this row's pending frame, if any, instead of queueing another (mode
        "latest"). The replacement takes the earlier frame's place: delivering a row's newer state
        earlier never breaks a later checkpoint's promise.
        """
        assert frame.data is not None
        size = len(frame.data)
        if coalesce and frame.key is not None:
            pending = self.pending_rows.get(frame.key)
            if pending is not None and pending.data is not None:
                self.nbytes += size - len(pending.data)
                pending.data = frame.data
                return True
        if frame.kind == "checkpoint" and self.last_checkpoint is not None:
            # Only the newest pending checkpoint matters; it must stay behind what precedes it.
            old = self.last_checkpoint
            if old.data is not None:
                self.nbytes -= len(old.data)
                old.data = None
        # One frame larger than the whole byte bound still fits an empty queue: refused, it would
        # close every subscriber of its table on every attempt, forever.
        if len(self.frames) >= self.max_messages or (self.nbytes and self.nbytes + size > self.max_bytes):
            self.overflowed = True
            _wake(self._ready)
            return False
        self.frames.append(frame)
        self.nbytes += size
        if coalesce and frame.key is not None:
            self.pending_rows[frame.key] = frame
        if frame.kind == "checkpoint":
            self.last_checkpoint = frame
        _wake(self._ready)
        if self.on_ready is not None:
            self.on_ready()
        return True

    def forget_rows(self, prefix: str) -> None:
        """Queued frames whose key starts with `prefix` take no more replacements."""
        for key in [k for k in self.pending_rows if k.startswith(prefix)]:
            del self.pending_rows[key]

    async def get(self, max_batch: int = 256) -> list[Frame]:
        """Wait for frames and take up to `max_batch` of them (superseded ones skipped)."""
        while (batch := await self.get_within(None, max_batch)) is None:
            pass  # woken without frames: wait again
        return batch

    async def get_within(self, linger: float | None, max_batch: int = 256) -> list[Frame] | None:
        """`get()`, or None when nothing came for `linger` seconds. The expiry is one timer
        callback resolving the same future a frame would: asyncio.timeout() around get() cost the
        WebSocket writer ~12% of the notifier's CPU at 1,000 clients (its Timeout object,
        current_task, reschedule and uncancel on every wait; bench/results/profile-fanout-30.md)."""
        if not self.frames and not self.overflowed:
            loop = asyncio.get_running_loop()
            ready = self._ready = loop.create_future()
            expiry = None if linger is None else loop.call_later(linger, _wake, ready)
            try:
                await ready
            finally:
                self._ready = None
                if expiry is not None:
                    expiry.cancel()
            if not self.frames and not self.overflowed:
                # Expired (a frame queued after the expiry but before this line is taken, since
                # its writer still ran and was not restarted; nothing can slip in after it).
                return None
        return self.take(max_batch)

    def take(self, max_batch: int = 256) -> list[Frame]:
        """Take up to `max_batch` queued frames now (superseded ones skipped)."""
        if len(self.frames) <= max_batch:  # the common case: all of them, without copying
            taken, self.frames = self.frames, []
        else:
            taken, self.frames = self.frames[:max_batch], self.frames[max_batch:]
        batch: list[Frame] = []
        for frame in taken:
            if frame.key is not None and self.pending_rows.get(frame.key) is frame:
                del self.pending_rows[frame.key]
            if frame is self.last_checkpoint:
                self.last_checkpoint = None
            if frame.data is None:
                continue
            self.nbytes -= len(frame.data)
            batch.append(frame)
        if len(self.frames) < self.max_messages // 4:
            _wake(self._room)
        return batch

    async def wait_for_room(self) -> None:
        """Backpressure for replays: wait until the queue is at most half full."""
        while len(self.frames) > self.max_messages // 2 or self.nbytes > self.max_bytes // 2:
            # Several subscriptions of one socket may replay at once: they share one future.
            if self._room is None or self._room.done():
                self._room = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._room)
