"""The notifier's reader: window reads of the change log, on a wake-up or on a timer.

The log is the only truth. A notification on the public channel is only a hint that the log may
have grown: real or forged, it makes the reader read sooner, never changes what it delivers.
Reads also run every `poll_interval`, so a change whose wake-up never came (a 2PC transaction
that opted out, a full NOTIFY queue, a writer's session settings) still arrives within it.

Each window's snapshot S is the checkpoint sent to clients after its changes were queued. Both
loops (wake-ups, reads) are supervised: any failure is logged, reported by `/healthz`, counted,
and the loop restarts with backoff; the reader's position survives, so nothing is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime

import psycopg
from rowcast.notifier.events import Event
from rowcast.notifier.hub import Hub
from rowcast.notifier.source import PAGE, ChangeSource, Position

from rowcast.errors import PoolerDetected

log = logging.getLogger("rowcast.notifier.listener")

YIELD_EVERY = 32
# Coalesced mode: while transactions are in flight at a read (they may have skipped the doorbell
# another one held), read again after MIN_PAUSE, doubling up to the poll interval.
MIN_PAUSE = 0.002


class Listener:
    def __init__(
        self,
        source: ChangeSource,
        hub: Hub,
        *,
        poll_interval: float = 0.25,
        min_gap: float = 0.002,
        page_size: int = PAGE,
        on_event: Callable[[Event], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
        on_read: Callable[[], None] | None = None,
        on_wakeup: Callable[[], None] | None = None,
        write_through: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> None:
        self.source = source
        self.hub = hub
        self.poll_interval = poll_interval
        # Reads triggered by wake-ups are at least this far apart: a flood of (forged)
        # notifications costs coalesced reads, bounded in rate.
        self.min_gap = min_gap
        self.page_size = page_size
        self.on_event = on_event
        self.on_reconnect = on_reconnect
        self.on_failure = on_failure
        self.on_read = on_read
        self.on_wakeup = on_wakeup
        self.write_through = write_through
        self.position: Position | None = None
        self.mode = "notify"
        self.listening = asyncio.Event()  # LISTEN works on a live connection
        self.reading = False  # the last read of the log succeeded
        self.problems: dict[str, str] = {"wakeups": "starting", "reader": "starting"}
        self.fatal: Exception | None = None
        self.reconnects = 0
        self._wake = asyncio.Event()
        # Set once the reader has a position. A subscription's snapshot must not be older: a
        # change committed between the two would be neither replayed nor read by a window.
        self.started = asyncio.Event()
        self._burst = 0
        self._last_xip: frozenset[int] = frozenset()
        self._pause = MIN_PAUSE

    @property
    def ready(self) -> bool:
        return self.listening.is_set() and self.reading and self.fatal is None

    def status(self) -> dict[str, object]:
        """What /healthz reports: each part, and what is wrong with it."""
        listening = self.listening.is_set()
        out: dict[str, object] = {"listening": listening, "reading": self.reading, "mode": self.mode}
        problems = {k: v for k, v in self.problems.items() if not (k == "wakeups" and listening)}
        if self.reading:
            problems.pop("reader", None)
        if self.fatal is not None:
            problems["fatal"] = str(self.fatal)
        if problems:
            out["problems"] = problems
        return out

    # -- supervision ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run both loops until cancelled; a PoolerDetected is fatal and ends the run."""
        tasks = [
            asyncio.create_task(self._supervise("wakeups", self._listen), name="rowcast-wakeups"),
            asyncio.create_task(self._supervise("reader", self._read_forever), name="rowcast-reader"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        except PoolerDetected as exc:
            self.fatal = exc
            log.critical("%s", exc)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _supervise(self, part: str, loop: Callable[[], Awaitable[None]]) -> None:
        delay = 0.05
        while True:
            started = time.monotonic()
            try:
                await loop()
                message = "stopped"
            except (asyncio.CancelledError, PoolerDetected):
                raise
            except (psycopg.Error, OSError, TimeoutError) as exc:
                message = _first_line(exc)
                log.warning("%s: %s", part, message)
            except Exception as exc:  # a bug must not silence the stream: log it, restart
                message = f"{exc.__class__.__name__}: {_first_line(exc)}"
                log.exception("%s failed; restarting it", part)
            self.problems[part] = message
            if part == "reader":
                self.reading = False
            else:
                self.reconnects += 1
                if self.on_reconnect is not None:
                    self.on_reconnect()
            if self.on_failure is not None:
                self.on_failure(part)
            if time.monotonic() - started > 10:
                delay = 0.05
            # Full jitter keeps replicas from reconnecting in lockstep after a Postgres restart.
            await asyncio.sleep(random.uniform(0, delay))  # noqa: S311 -- jitter, not crypto
            delay = min(delay * 2, 5.0)

    async def _listen(self) -> None:
        first = True
        async for _ in self.source.wakeups(self.listening):
            if first:
                first = False
                self.problems.pop("wakeups", None)
                log.info("listening for wake-ups (wake mode %s)", self.mode)
            elif self.on_wakeup is not None:
                self.on_wakeup()
            self._wake.set()

    # -- reading -------------------------------------------------------------------------------

    async def _read_forever(self) -> None:
        while True:
            if self.position is None:
                self.position, self.mode = await self.source.start()
                self._succeeded()
                self.started.set()
                self.hub.checkpoint(str(self.position.snapshot))
                log.info("reading the change log from %s", self.position.snapshot)
            try:
                async with asyncio.timeout(self._next_pause()):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            started = time.monotonic()
            await self.read_once()
            # Rate bound for wake-ups: the next read starts min_gap after this one began.
            rest = self.min_gap - (time.monotonic() - started)
            if rest > 0:
                await asyncio.sleep(rest)

    def _next_pause(self) -> float:
        if self.mode != "coalesced" or self.position is None:
            return self.poll_interval
        xip = self.position.snapshot.xip
        if not xip:
            self._pause = MIN_PAUSE
            return self.poll_interval
        self._pause = MIN_PAUSE if xip != self._last_xip else min(self._pause * 2, self.poll_interval)
        self._last_xip = xip
        return self._pause

    async def read_once(self) -> None:
        """Read one window (all its pages), publish its changes, then checkpoint its snapshot."""
        since = self.position
        assert since is not None
        if self.mode == "coalesced":
            await self.source.rearm()  # before the read: a later writer rings again
        page = await self.source.read(since, None, 0, self.page_size)
        self.mode = page.mode
        if page.gap is not None:
            log.error("%s: every subscriber is told to resync", page.gap)
            self.hub.resync_all("cursor_expired", page.gap)
            self.position = Position(page.snapshot)
            self._succeeded()
            self.hub.checkpoint(str(page.snapshot))
            return
        while True:
            last = page.events[-1] if page.events and not page.more else None
            for event in page.events:
                # The window's last change is written to each client as it is queued (unless a
                # checkpoint follows now: it then joins the change in one write per client).
                await self._publish(event, event is last and not self.hub.checkpoint_due())
            if not page.more:
                break
            page = await self.source.read(since, page.snapshot, page.events[-1].id, self.page_size)
        self.position = Position(page.snapshot)
        self._succeeded()
        self.hub.checkpoint(str(page.snapshot))

    def _succeeded(self) -> None:
        self.reading = True
        self.problems.pop("reader", None)
        if self.on_read is not None:
            self.on_read()

    async def _publish(self, event: Event, through: bool = False) -> None:
        """Fan one change out; every YIELD_EVERY changes let client writers drain their queues.

        Without the yield a burst (a 20,000-row statement) is fanned out in one go and a perfectly
        fast client's bounded queue overflows before its writer ever runs.
        """
        try:
            if self.on_event is not None:
                self.on_event(event)
            with self.write_through() if through else nullcontext():
                self.hub.publish(event)
        except Exception:  # one change that breaks fan-out must not stop the stream
            log.exception("could not fan out change %s of %s.%s", event.id, event.schema, event.table)
            if self.on_failure is not None:
                self.on_failure("fanout")
        self._burst += 1
        if self._burst >= YIELD_EVERY:
            self._burst = 0
            await asyncio.sleep(0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def event_lag_seconds(event: Event) -> float | None:
    try:
        return time.time() - datetime.fromisoformat(event.at).timestamp()
    except (ValueError, TypeError):
        return None
