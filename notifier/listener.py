"""The one LISTEN connection of a notifier process, its checkpoints and its catch-up.

Stream order is everything here: events and checkpoint markers are handed to the hub in exactly
the order Postgres delivered them (commit order). After a reconnect the listener replays the log
from its last checkpoint before it forwards anything received live, so nothing is lost while
the connection was down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection

from notifier.events import Event
from notifier.hub import Hub
from notifier.replay import CursorExpired, Pool, current_snapshot, fetch_event, replay
from notifier.snapshot import BadCursor, Snapshot
from rowcast.errors import PoolerDetected

log = logging.getLogger("rowcast.notifier.listener")

CHANNEL = "rowcast"
_END = object()
# Coalesced mode: re-read every MIN_POLL while transactions are in flight, backing off to
# MAX_POLL while the same ones stay open (a long transaction), and read every IDLE_READ anyway.
MIN_POLL, MAX_POLL, IDLE_READ = 0.002, 0.1, 2.0
YIELD_EVERY = 32


class Listener:
    def __init__(
        self,
        url: str,
        hub: Hub,
        pool: Pool,
        *,
        checkpoint_interval: float = 0.1,
        idle_checkpoint_interval: float = 2.0,
        liveness_timeout: float = 5.0,
        on_event: Callable[[Event], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
        on_malformed: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self.hub = hub
        self.pool = pool
        self.checkpoint_interval = checkpoint_interval
        self.idle_checkpoint_interval = idle_checkpoint_interval
        self.liveness_timeout = liveness_timeout
        self.on_event = on_event
        self.on_reconnect = on_reconnect
        self.on_malformed = on_malformed
        self.last_checkpoint: Snapshot | None = None
        self.ready = asyncio.Event()  # LISTENing and caught up
        self.reconnects = 0
        self.malformed = 0
        self.fatal: Exception | None = None
        self._events_since_marker = 0
        self._last_marker = 0.0
        self._probe: str | None = None
        self._burst = 0
        self.mode = "notify"  # the database's wake-up mode, read at connect, updated by NOTIFY
        self._wake = asyncio.Event()
        # After a catch-up: the replay's snapshot; queued events it saw were already delivered.
        self._replayed_upto: Snapshot | None = None

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Listen forever: reconnect with backoff and catch up after every drop."""
        delay = 0.05
        while True:
            started = time.monotonic()
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except PoolerDetected as exc:
                self.fatal = exc
                self.ready.clear()
                log.critical("%s", exc)
                return
            except (psycopg.Error, OSError, TimeoutError) as exc:
                self.ready.clear()
                log.warning(
                    "LISTEN connection lost: %s", str(exc).strip().splitlines()[0] if str(exc) else exc
                )
            self.ready.clear()
            self.reconnects += 1
            if self.on_reconnect is not None:
                self.on_reconnect()
            if time.monotonic() - started > 10:
                delay = 0.05
            # Full jitter keeps replicas from reconnecting in lockstep after a Postgres restart.
            await asyncio.sleep(random.uniform(0, delay))  # noqa: S311 -- jitter, not crypto
            delay = min(delay * 2, 5.0)

    async def _session(self) -> None:
        conn = await AsyncConnection.connect(self.url, autocommit=True, application_name="rowcast-listener")
        try:
            await conn.execute(f"LISTEN {CHANNEL}")
            row = await (await conn.execute("SELECT current_setting('rowcast.wake_mode', true)")).fetchone()
            self.mode = "coalesced" if row and row[0] == "coalesced" else "notify"
            queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=100_000)
            reader = asyncio.create_task(self._read(conn, queue), name="rowcast-listen-reader")
            log_reader = asyncio.create_task(self._read_log(), name="rowcast-log-reader")
            try:
                await self._probe_listen()
                await self._catch_up(queue)
                # Not ready yet: only when the probe comes back is LISTEN known to work (see _handle).
                if self.mode == "coalesced":
                    self._wake.set()
                await self._dispatch(queue, reader, log_reader)
            finally:
                for task in (reader, log_reader):
                    task.cancel()
                await asyncio.gather(reader, log_reader, return_exceptions=True)
        finally:
            self.ready.clear()
            await conn.close()

    async def _read(self, conn: AsyncConnection[Any], queue: asyncio.Queue[Any]) -> None:
        """Move notifications into the queue; a quiet spell triggers a liveness check."""
        try:
            while True:
                got_any = False
                async for notify in conn.notifies(timeout=self.liveness_timeout):
                    got_any = True
                    await queue.put(notify.payload)
                if not got_any:
                    async with asyncio.timeout(self.liveness_timeout):
                        await conn.execute("SELECT 1")
        except BaseException as exc:
            await queue.put((_END, exc))
            raise

    async def _next(self, queue: asyncio.Queue[Any]) -> str:
        item = await queue.get()
        if isinstance(item, tuple) and item and item[0] is _END:
            error = item[1]
            raise error if isinstance(error, Exception) else ConnectionError("listener stopped")
        return str(item)

    async def _probe_listen(self) -> None:
        """Prove LISTEN works on this connection: a transaction-pooling PgBouncer breaks it silently."""
        nonce = secrets.token_hex(8)
        self._probe = nonce
        async with self.pool.connection() as conn:
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps({"probe": nonce})))

    # -- catch-up and dispatch -----------------------------------------------------------------

    async def _catch_up(self, queue: asyncio.Queue[Any]) -> None:
        """Replay what was committed since the last checkpoint; live notifications wait meanwhile."""
        if self.last_checkpoint is None:
            # First start: live from here on; this snapshot is where a later catch-up begins.
            self.last_checkpoint = await current_snapshot(self.pool)
            self._replayed_upto = None
            return
        try:
            async with replay(self.pool, self.last_checkpoint) as (now, events):
                count = 0
                async for event in events:
                    await self._publish_yielding(event)
                    count += 1
        except (CursorExpired, BadCursor) as exc:
            log.error("catch-up impossible (%s): every subscriber is told to resync", exc)
            self.hub.resync_all("cursor_expired", str(exc))
            now = await current_snapshot(self.pool)
            count = 0
        log.info("caught up: %d change(s) replayed since the last checkpoint", count)
        self._replayed_upto = now
        # Everything `now` sees has been delivered: that is a checkpoint in its own right.
        self._checkpoint(now)

    async def _dispatch(
        self, queue: asyncio.Queue[Any], reader: asyncio.Task[None], log_reader: asyncio.Task[None]
    ) -> None:
        probe_deadline = time.monotonic() + 5.0
        while True:
            if log_reader.done():
                log_reader.result()  # re-raise what stopped it: the session reconnects
            if self._probe is not None and time.monotonic() > probe_deadline:
                raise PoolerDetected(
                    "LISTEN does not receive notifications on this connection (is it behind PgBouncer "
                    "in transaction mode?); point the notifier directly at Postgres"
                )
            try:
                async with asyncio.timeout(1.0 if self._probe is not None else None):
                    payload = await self._next(queue)
            except TimeoutError:
                continue
            await self._handle(payload)

    async def _handle(self, payload: str) -> None:
        try:
            data = json.loads(payload)
            if not isinstance(data, dict):
                raise ValueError("payload is not an object")
            if "probe" in data:
                if data["probe"] == self._probe:
                    self._probe = None
                    self.ready.set()
                    log.info("listening on channel %r (wake mode %s)", CHANNEL, self.mode)
                return
            if "mode" in data:
                self.mode = "coalesced" if data["mode"] == "coalesced" else "notify"
                log.info("wake mode is now %s", self.mode)
                self._wake.set()
                return
            if self.mode == "coalesced" or "wake" in data:
                # The log is read on a doorbell; markers and payloads are only wake-ups here.
                self._wake.set()
                return
            if "checkpoint" in data:
                self._checkpoint(Snapshot.parse(str(data["checkpoint"])))
                return
            if data.get("ref") is True:
                event = await fetch_event(self.pool, int(data["id"]))
                if event is None:
                    log.warning("change %s announced by reference is not in the log (pruned?)", data["id"])
                    return
            else:
                event = Event.from_payload(data, raw=payload)
        except (ValueError, KeyError, TypeError) as exc:
            self.malformed += 1
            if self.on_malformed is not None:
                self.on_malformed()
            log.warning("skipped a malformed notification (%s): %.200r", exc, payload)
            return
        replayed = self._replayed_upto
        if replayed is not None:
            if replayed.visible(event.xid):
                return  # committed before the catch-up's snapshot: already replayed
            # Stream order is commit order: nothing after this was seen by the replay.
            self._replayed_upto = None
        await self._publish_yielding(event)

    async def _publish_yielding(self, event: Event) -> None:
        """Publish, and every YIELD_EVERY events let client writers drain their outboxes.

        Without this a burst (a log read, a 20,000-row statement) is fanned out in one go and a
        perfectly fast client's bounded queue overflows before its writer ever runs.
        """
        self._publish(event)
        self._burst += 1
        if self._burst >= YIELD_EVERY:
            self._burst = 0
            await asyncio.sleep(0)

    def _publish(self, event: Event) -> None:
        self._events_since_marker += 1
        if self.on_event is not None:
            self.on_event(event)
        self.hub.publish(event)

    def _checkpoint(self, snap: Snapshot) -> None:
        self.last_checkpoint = snap
        self.hub.checkpoint(str(snap))

    # -- coalesced mode: read the log on a doorbell ---------------------------------------------

    async def _read_log(self) -> None:
        """In coalesced mode (or after a stray doorbell), read the log window and publish it.

        Each read re-arms the doorbell first, then replays what the last read's snapshot did not
        see. Transactions in flight at a read may have skipped the doorbell because another one
        held it, so reads continue, with a growing pause, while any are in flight: no change is
        stranded. The read's snapshot is a checkpoint in coalesced mode, where every event comes
        from these reads.
        """
        pause = MIN_POLL
        last_xip: frozenset[int] = frozenset()
        async with self.pool.connection() as conn:
            await conn.execute("INSERT INTO rowcast.doorbell VALUES (1, true) ON CONFLICT (id) DO NOTHING")
        while True:
            try:
                async with asyncio.timeout(IDLE_READ if self.mode == "coalesced" else None):
                    await self._wake.wait()
            except TimeoutError:
                pass  # a safety read now and then, in case a doorbell was lost with a crash
            self._wake.clear()
            watched: frozenset[int] | None = None
            while True:
                now = await self._read_window()
                if self.mode == "coalesced":
                    watched = now.xip
                else:
                    # A stray doorbell from a session still in coalesced mode: follow only the
                    # transactions in flight at the first read, or live load would keep us reading.
                    watched = (
                        now.xip if watched is None else frozenset(x for x in watched if not now.visible(x))
                    )
                if not watched:
                    break
                pause = MIN_POLL if watched != last_xip else min(pause * 2, MAX_POLL)
                last_xip = watched
                try:
                    async with asyncio.timeout(pause):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                self._wake.clear()

    async def _read_window(self) -> Snapshot:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE rowcast.doorbell SET armed = true WHERE id = "
                "(SELECT id FROM rowcast.doorbell WHERE NOT armed FOR UPDATE SKIP LOCKED)"
            )
        since = self.last_checkpoint
        assert since is not None
        async with replay(self.pool, since) as (now, events):
            async for event in events:
                await self._publish_yielding(event)
        if self.mode == "coalesced":
            self._checkpoint(now)
        return now

    # -- checkpoint markers --------------------------------------------------------------------

    async def send_markers(self) -> None:
        """Every interval while events flow (and now and then when idle), send a marker.

        The marker carries the sender's snapshot; when it comes back on the LISTEN connection,
        every change committed by a transaction that snapshot sees has already arrived before it.
        """
        while True:
            await asyncio.sleep(self.checkpoint_interval)
            if not self.ready.is_set() or self.mode != "notify":
                continue
            idle_for = time.monotonic() - self._last_marker
            if not self._events_since_marker and idle_for < self.idle_checkpoint_interval:
                continue
            self._events_since_marker = 0
            self._last_marker = time.monotonic()
            try:
                async with self.pool.connection() as conn:
                    await conn.execute(
                        "SELECT pg_notify(%s, json_build_object('checkpoint', pg_current_snapshot()::text)::text)",
                        (CHANNEL,),
                    )
            except psycopg.Error as exc:
                log.warning("could not send a checkpoint marker: %s", exc)


def event_lag_seconds(event: Event) -> float | None:
    try:
        return time.time() - datetime.fromisoformat(event.at).timestamp()
    except ValueError:
        return None
