"""A client's bounded queue of encoded frames (count and bytes), with per-row coalescing."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class Frame:
    kind: str  # change | checkpoint | subscribed | resync_required | error | pong
    data: str | None  # None: superseded (a coalesced or replaced frame), skip it
    sse_id: str | None = None
    key: str | None = None


@dataclass
class Outbox:
    max_messages: int
    max_bytes: int
    frames: deque[Frame] = field(default_factory=deque)
    nbytes: int = 0
    pending_rows: dict[str, Frame] = field(default_factory=dict)
    last_checkpoint: Frame | None = None
    overflowed: bool = False
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _room: asyncio.Event = field(default_factory=asyncio.Event)

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
        if len(self.frames) >= self.max_messages or self.nbytes + size > self.max_bytes:
            self.overflowed = True
            self._ready.set()
            return False
        self.frames.append(frame)
        self.nbytes += size
        if coalesce and frame.key is not None:
            self.pending_rows[frame.key] = frame
        if frame.kind == "checkpoint":
            self.last_checkpoint = frame
        self._ready.set()
        return True

    def forget_rows(self, prefix: str) -> None:
        """Queued frames whose key starts with `prefix` take no more replacements."""
        for key in [k for k in self.pending_rows if k.startswith(prefix)]:
            del self.pending_rows[key]

    async def get(self, max_batch: int = 256) -> list[Frame]:
        """Wait for frames and take up to `max_batch` of them (superseded ones skipped)."""
        while not self.frames and not self.overflowed:
            self._ready.clear()
            await self._ready.wait()
        batch: list[Frame] = []
        while self.frames and len(batch) < max_batch:
            frame = self.frames.popleft()
            if frame.key is not None and self.pending_rows.get(frame.key) is frame:
                del self.pending_rows[frame.key]
            if frame is self.last_checkpoint:
                self.last_checkpoint = None
            if frame.data is None:
                continue
            self.nbytes -= len(frame.data)
            batch.append(frame)
        if len(self.frames) < self.max_messages // 4:
            self._room.set()
        return batch

    async def wait_for_room(self) -> None:
        """Backpressure for replays: wait until the queue is at most half full."""
        while len(self.frames) > self.max_messages // 2 or self.nbytes > self.max_bytes // 2:
            self._room.clear()
            await self._room.wait()
