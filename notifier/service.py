"""Subscriptions, shared by the three transports: validate, register, replay, go live."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from rowcast.notifier.catalog import Catalog, TableInfo
from rowcast.notifier.filters import Filter, FilterError
from rowcast.notifier.hub import LIVE, Hub, Session, Subscription
from rowcast.notifier.metrics import Metrics
from rowcast.notifier.outbox import Outbox
from rowcast.notifier.presence import Presence
from rowcast.notifier.replay import CursorExpired, LogReader, Pool, ReadGate, current_snapshot
from rowcast.notifier.snapshot import BadCursor, Snapshot
from rowcast.notifier.standby import Standby

from rowcast import names, wire
from rowcast.auth import Principal
from rowcast.settings import Settings

log = logging.getLogger("rowcast.notifier")

MODES = ("all", "latest")


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref

    def frame(self, **context: Any) -> dict[str, Any]:
        if self.ref is not None:
            context["ref"] = self.ref
        return wire.error_frame(self.code, self.message, **context)


@dataclass(frozen=True)
class Spec:
    """A validated subscription request."""

    ref: str
    table: TableInfo
    filter: Filter
    columns: tuple[str, ...] | None
    cursor: Snapshot | None
    mode: str


class Notifier:
    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        hub: Hub,
        catalog: Catalog,
        metrics: Metrics,
        reader_started: asyncio.Event | None = None,
        presence: Presence | None = None,
        standby: Standby | None = None,
    ) -> None:
        self.settings = settings
        # Who views or edits which row (notifier/presence.py); None where the app runs without it.
        self.presence = presence
        # Subscriptions take their snapshot only once the log reader has its position: every
        # change their snapshot does not see is then read by a window after they registered.
        self.reader_started = reader_started
        self.pool = pool
        # Replays and long-poll pages read their rows on the standby when there is one
        # (ROWCAST_READ_URL); snapshots (`current_snapshot(self.pool)`) always come from the primary.
        self.reads = LogReader(pool, ReadGate(settings.max_reads_per_subject), settings.read_timeout, standby)
        self.hub = hub
        self.catalog = catalog
        hub.on_table_change.append(catalog.apply)
        self.metrics = metrics
        # Label children resolved once: .labels() is a lookup on every write otherwise.
        self.messages_out = {t: metrics.messages_out.labels(t) for t in ("ws", "sse", "longpoll")}

    def open_session(
        self, principal: Principal, on_close: Callable[[int | None, str], None], transport: str
    ) -> Session:
        session = Session(
            principal,
            Outbox(self.settings.queue_messages, self.settings.queue_bytes),
            on_close,
            on_drop=self.metrics.drops.inc,
            on_end=self._ended,
        )
        self.hub.add_session(session)
        self.metrics.connections.labels(transport).inc()
        return session

    def _ended(self, sub: Subscription) -> None:
        self.hub.unregister(sub)
        self.metrics.subscriptions.set(self.hub.subscription_count)

    def close_session(self, session: Session, transport: str) -> None:
        if self.presence is not None:
            self.presence.detach(session)
        self.hub.remove_session(session)
        self.metrics.connections.labels(transport).dec()
        self.metrics.subscriptions.set(self.hub.subscription_count)

    async def parse(
        self, principal: Principal, frame: dict[str, Any], taken: Mapping[str, object] | None = None
    ) -> Spec:
        """A subscribe frame checked against the catalog and the token; `taken`: the refs the
        connection already uses (none for a long-poll, which has no connection)."""
        taken = {} if taken is None else taken
        ref = frame.get("ref")
        if not isinstance(ref, str) or not 0 < len(ref) <= 64:
            raise ProtocolError("bad_frame", "ref must be a string of 1 to 64 characters")
        key = self._table_key(frame, ref)
        if ref in taken:
            raise ProtocolError(
                "duplicate_ref", f"a subscription with ref {ref!r} exists on this connection", ref
            )
        if len(taken) >= self.settings.max_subscriptions:
            raise ProtocolError(
                "too_many_subscriptions",
                f"at most {self.settings.max_subscriptions} subscriptions per connection",
                ref,
            )
        await self._check_scopes(principal, key, ref)
        if not principal.can_read(key):
            raise ProtocolError("forbidden", f"your token does not allow reading {key}", ref)
        info = await self._table(key, ref)
        if info is None:
            raise ProtocolError("unknown_table", f"unknown table: {key} (not captured)", ref)
        try:
            flt = Filter.compile(frame.get("where"), info.columns)
        except FilterError as exc:
            raise ProtocolError(exc.code, str(exc), ref) from None
        columns = frame.get("columns")
        if columns is not None:
            if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns) or not columns:
                raise ProtocolError("bad_frame", "columns must be a non-empty list of column names", ref)
            unknown = [c for c in columns if c not in info.columns]
            if unknown:
                raise ProtocolError("unknown_column", f"unknown column: {unknown[0]}", ref)
        mode = frame.get("mode", "all")
        if mode not in MODES:
            raise ProtocolError("bad_frame", "mode must be 'all' or 'latest'", ref)
        cursor = frame.get("cursor")
        snap = None
        if cursor is not None:
            try:
                snap = Snapshot.parse(cursor)
            except BadCursor as exc:
                raise ProtocolError("bad_cursor", str(exc), ref) from None
        return Spec(ref, info, flt, tuple(columns) if columns else None, snap, mode)

    @staticmethod
    def _table_key(frame: dict[str, Any], ref: str) -> str:
        """The canonical name of the table a frame asks for: `schema` and `table` as two exact
        fields, or `table` alone as a dotted name read by Postgres's rules (rowcast.names)."""
        table, schema = frame.get("table"), frame.get("schema")
        if not isinstance(table, str) or not 0 < len(table) <= 300:
            raise ProtocolError("bad_frame", "table must be a table name", ref)
        if schema is not None and (not isinstance(schema, str) or not 0 < len(schema) <= 300):
            raise ProtocolError("bad_frame", "schema must be a schema name", ref)
        try:
            if schema is not None:
                return names.canonical(*names.exact(schema, table))
            return names.qualify(table)
        except names.BadName as exc:
            raise ProtocolError("bad_table", str(exc), ref) from None

    async def _table(self, key: str, ref: str | None) -> TableInfo | None:
        try:
            return await self.catalog.get(key)
        except psycopg.Error as exc:
            raise ProtocolError(
                "unavailable", f"the database is unavailable: {exc.__class__.__name__}", ref
            ) from None

    async def _check_scopes(self, principal: Principal, key: str, ref: str | None) -> None:
        """ "forbidden" if a scope names an unknown (uncaptured) table, or a column the
        subscribed table does not have.

        A scope that names nothing real must refuse, never widen into "every row": an unknown
        table refuses every subscription (which table did it mean?), an unknown column its own
        table. Runs before anything else looks at the subscription.
        """
        for scoped, scope in principal.scopes.items():
            info = await self._table(scoped, ref)
            if info is None:
                raise ProtocolError("forbidden", f"your token's scope names an unknown table: {scoped}", ref)
            unknown = sorted(set(scope) - set(info.columns))
            if unknown and key == scoped:
                raise ProtocolError(
                    "forbidden", f"your token's scope names an unknown column: {scoped}.{unknown[0]}", ref
                )

    def begin(self, session: Session, spec: Spec) -> Subscription:
        """Register for live events (buffered until the replay is done); no await, so no race."""
        sub = Subscription(
            spec.ref, session, spec.table.qualified, spec.table.pk, spec.filter, spec.columns, spec.mode
        )
        sub.since = spec.cursor
        if spec.cursor is not None:
            session.floor.append(spec.cursor)
        # Live first (buffered), then replay: the order that makes resume gap-free.
        self.hub.register(sub)
        self.metrics.subscriptions.set(self.hub.subscription_count)
        session.replaying += 1
        return sub

    async def complete(self, sub: Subscription, spec: Spec) -> Subscription | None:
        """Replay from the cursor (or start live), then flush what arrived meanwhile."""
        session = sub.session
        try:
            if self.reader_started is not None and not self.reader_started.is_set():
                async with asyncio.timeout(self.settings.startup_wait):
                    await self.reader_started.wait()
            if spec.cursor is None:
                now = await current_snapshot(self.pool)
                session.send("subscribed", {"ref": spec.ref, "cursor": str(now)}, sse_id=str(now))
                sub.since = now
                session.floor.append(now)
                pending = [e for e in sub.buffer if not now.visible(e.xid)]
            else:
                now = await self._replay(session, sub, spec)
                pending = [e for e in sub.buffer if not now.visible(e.xid)]
                # The client now has everything `now` sees: a window read that started before the
                # replay may still publish some of it, and a checkpoint older than `now` would
                # move the client's resume point back.
                sub.since = now
                session.floor.append(now)
            for event in pending:
                session.deliver(sub, event)
            sub.buffer = []
            sub.state = LIVE
            if self.presence is not None:
                self.presence.welcome(sub)
            return sub
        except CursorExpired as exc:
            self.hub.unregister(sub)
            session.send(
                "resync_required", {"ref": spec.ref, "reason": "cursor_expired", "message": str(exc)}
            )
        except BadCursor as exc:
            self.hub.unregister(sub)
            session.send("error", ProtocolError("bad_cursor", str(exc), spec.ref).frame())
        except (psycopg.Error, OSError, TimeoutError) as exc:
            self.hub.unregister(sub)
            log.warning("subscribe %s failed: %s", spec.ref, exc or "the change log reader is not running")
            session.send(
                "error",
                ProtocolError("unavailable", "the database is unavailable; retry", spec.ref).frame(),
            )
        except BaseException:
            self.hub.unregister(sub)
            raise
        finally:
            session.replay_finished()
            self.metrics.subscriptions.set(self.hub.subscription_count)
        return None

    async def _replay(self, session: Session, sub: Subscription, spec: Spec) -> Snapshot:
        """Replay in pages; waiting for room in the client's queue happens between page reads,
        with no connection held (a client that never reads stalls only its own replay)."""
        assert spec.cursor is not None
        table = (spec.table.schema, spec.table.name)
        replay = await self.reads.replay(session.principal.sub, spec.cursor, table)
        # Only now is the cursor known to be replayable: an expired or foreign one never gets a
        # 'subscribed' first.
        session.send("subscribed", {"ref": spec.ref, "cursor": str(spec.cursor)}, sse_id=str(spec.cursor))
        count = 0
        outbox = session.outbox
        try:
            async with contextlib.aclosing(replay.pages()) as pages:
                async for page in pages:
                    for event in page:
                        if session.closed:
                            return replay.now
                        session.deliver(sub, event)
                        count += 1
                        # By bytes too: a burst of large rows overflows the byte bound long before the count.
                        if len(outbox) > outbox.max_messages // 2 or outbox.nbytes > outbox.max_bytes // 2:
                            await outbox.wait_for_room()
        finally:
            self.metrics.replayed.inc(count)
        return replay.now

    def unsubscribe(self, session: Session, ref: Any) -> None:
        sub = session.subscriptions.get(ref) if isinstance(ref, str) else None
        if sub is None:
            raise ProtocolError(
                "unknown_ref", f"no subscription with ref {ref!r}", ref if isinstance(ref, str) else None
            )
        self.hub.unregister(sub)
        self.metrics.subscriptions.set(self.hub.subscription_count)


async def run_writer(session: Session, write: Callable[[list[Any]], Any]) -> None:
    """Drain a session's outbox into its transport until the session closes."""
    while not session.closed:
        batch = await session.outbox.get()
        if session.outbox.overflowed and not batch:
            return
        await write(batch)
        await asyncio.sleep(0)
