"""Fan-out: subscriptions indexed by table, one bounded outbox per client session.

`Hub.publish` runs synchronously in the listener's loop: it never awaits, never touches the
database, and never waits for a client. A slow client only fills its own outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from rowcast.notifier.events import DROP, SCHEMA_OPS, Event
from rowcast.notifier.filters import Filter
from rowcast.notifier.outbox import Frame, Outbox
from rowcast.notifier.schema import TableChange, problem
from rowcast.notifier.snapshot import Snapshot

from rowcast import jsonexact, wire
from rowcast.auth import Principal
from rowcast.wire import Close

log = logging.getLogger("rowcast.notifier.hub")

REPLAYING, LIVE = "replaying", "live"
# The view a subscriber would get needs the row images and they do not parse (Event.decodable).
UNDECODABLE = "undecodable"
# A DDL log row (notifier/schema.py): news about the table, the same for every subscriber.
SCHEMA = "schema"
# A truncate seen by a scoped subscriber: it reaches rows outside the scope, so who did it (an
# application name, an address, an actor) is not this subscriber's to know.
BARE = "bare"


def dumps(obj: Any) -> str:
    # Exact numbers (Decimal as Postgres wrote them), never a NaN/Infinity token: rowcast.jsonexact.
    return jsonexact.dumps(obj, default=str)


def undecodable_error(event: Event) -> dict[str, Any]:
    """What a subscriber is told of a change it cannot be given (no row data: its scope is unknown)."""
    return wire.error_frame(
        "undecodable_change",
        f"change {event.id} of {event.qualified} cannot be filtered or projected: "
        f"its row does not parse ({event.undecodable_reason})",
        id=event.id,
        schema=event.schema,
        table=event.table,
        op=event.op,
    )


def checkpoint_frame(cursor: str) -> str:
    return '{"type":"checkpoint","cursor":' + dumps(cursor) + "}"


def _project(image: dict[str, Any] | None, columns: tuple[str, ...] | None) -> dict[str, Any] | None:
    if image is None or columns is None:
        return image
    return {k: v for k, v in image.items() if k in columns}


def _key_before(event: Event) -> dict[str, Any]:
    """The row's primary key before the change (an update may have changed it)."""
    before = event.old_image() or {}
    return {column: before.get(column, value) for column, value in (event.pk or {}).items()}


def encode_view(event: Event, variant: str, columns: tuple[str, ...] | None) -> str:
    """The change body for one view of an event, encoded once per (variant, columns)."""
    if variant == "full" and columns is None and event.raw is not None:
        return event.raw  # Postgres already wrote this JSON: nothing to encode
    cache_key = (variant, columns)
    body = event.encoded.get(cache_key)
    if body is not None:
        return body
    if variant == SCHEMA:
        body = dumps(TableChange.from_event(event).payload(event))
        event.encoded[cache_key] = body
        return body
    if variant == UNDECODABLE:
        # Long-poll lists it among the changes (WebSocket and SSE send an error frame instead,
        # see Session.deliver): the cursor moves past it and the client learns what it missed.
        body = dumps(
            {
                "id": event.id,
                "schema": event.schema,
                "table": event.table,
                "op": event.op,
                "error": undecodable_error(event),
            }
        )
        event.encoded[cache_key] = body
        return body
    fields: dict[str, Any] = {
        "id": event.id,
        "schema": event.schema,
        "table": event.table,
        "op": event.op,
        "pk": event.pk,
        "row": _project(event.row, columns),
        "old": _project(event.old, columns),
        "actor": event.actor,
        "at": event.at,
    }
    if variant == "in":  # an update moved the row into this subscriber's view
        fields.update(op="insert", old=None, moved="in")
    elif variant == "out":  # ... or out of it: only the key, never the other side's data or writer
        key = _key_before(event)  # the key the subscriber has, if the update also changed it
        fields.update(op="delete", pk=key, row=None, old=key, actor=None, moved="out")
    elif variant == BARE:
        fields.update(actor=None)
    body = dumps(fields)
    event.encoded[cache_key] = body
    return body


class View:
    """How one subscriber sees a table's changes: its token's scope, then its filter, then its
    projection. Pure: it judges and renders events and knows no session, so long-poll uses it as
    it is and a Subscription adds only delivery."""

    __slots__ = ("columns", "filter", "pk", "prefix", "principal", "ref", "table", "wanted")

    def __init__(
        self,
        ref: str,
        principal: Principal,
        table: str,  # qualified
        pk: tuple[str, ...],
        filter: Filter,
        columns: tuple[str, ...] | None,
    ) -> None:
        self.ref = ref
        self.principal = principal
        self.table = table
        self.pk = pk
        self.filter = filter
        self.prefix = '{"type":"change","ref":' + dumps(ref) + ","
        self.wanted = columns  # the columns the client asked for (`columns` adds the key)
        self.columns = columns
        self._project()

    def _project(self) -> None:
        if self.wanted is not None:
            self.columns = tuple(dict.fromkeys((*self.pk, *self.wanted)))

    def table_changed(self, change: TableChange) -> tuple[str, str] | None:
        """Follow a DDL on this view's table: (code, message) if it cannot go on."""
        found = problem(change, self.principal, self.table, self.filter.depends_on, self.wanted)
        if found is None:
            self.table, self.pk = change.key, change.pk
            self._project()
        return found

    def _visible(self, image: dict[str, Any] | None) -> bool:
        return (
            image is not None
            # Scope first: a row outside the token's scope never reaches the client's filter.
            and self.principal.in_scope(self.table, image)
            and self.filter.matches(image)
        )

    def in_view(self, image: dict[str, Any] | None) -> bool:
        """Whether a row image is one this subscriber sees (its token's scope, then its filter)."""
        return self._visible(image)

    def variant(self, event: Event) -> str | None:
        """How this subscriber sees the event: full, in, out, undecodable, or not at all (None)."""
        if event.op == "truncate":
            return BARE if self.principal.scope(self.table) else "full"
        if event.op in SCHEMA_OPS:
            return SCHEMA
        unfiltered = not self.filter.predicates and not self.principal.scope(self.table)
        if unfiltered and self.columns is None:
            return "full"  # `raw` verbatim: the images are never parsed
        if not event.decodable:
            # A filter, a scope or a projection needs images that do not parse: never guess
            # (a scoped subscriber must not get rows outside its scope), say so instead.
            return UNDECODABLE
        if unfiltered:
            return "full"
        if event.op == "insert":
            return "full" if self._visible(event.row) else None
        if event.op == "delete":
            return "full" if self._visible(event.old) else None
        was, now = self._visible(event.old_image()), self._visible(event.row)
        if was and now:
            return "full"
        if now:
            return "in"
        if was:
            return "out"
        return None

    def render(self, event: Event, variant: str) -> str:
        return self.prefix + encode_view(event, variant, self.columns)[1:]


class Subscription(View):
    """A View with delivery: the session it feeds, its mode, and its replay state."""

    __slots__ = ("buffer", "ended", "mode", "session", "since", "state")

    def __init__(
        self,
        ref: str,
        session: Session,
        table: str,
        pk: tuple[str, ...],
        filter: Filter,
        columns: tuple[str, ...] | None,
        mode: str,  # all | latest
    ) -> None:
        super().__init__(ref, session.principal, table, pk, filter, columns)
        self.session = session
        self.mode = mode
        self.state = REPLAYING
        self.buffer: list[Event] = []
        # The cursor it started from: what that cursor saw, the client has (or its snapshot does).
        self.since: Snapshot | None = None
        self.ended = False  # ended by a DDL (dropped table, a column it depends on gone)

    def offer(self, event: Event) -> None:
        """From the hub: buffer while replaying, else deliver."""
        if self.since is not None and self.since.visible(event.xid):
            # The listener republishes from its own last checkpoint after a reconnect (or on a
            # coalesced read), which may be older than this subscription's cursor.
            return
        if self.state == REPLAYING:
            self.buffer.append(event)
            if len(self.buffer) > self.session.outbox.max_messages * 10:
                self.session.close(Close.SLOW, "slow consumer: too many changes during replay")
            return
        self.session.deliver(self, event)


class Session:
    """One client connection (WebSocket, SSE stream or long-poll wait), any transport."""

    __slots__ = (
        "_on_close",
        "_on_drop",
        "_on_end",
        "closed",
        "floor",
        "held_checkpoint",
        "outbox",
        "principal",
        "replaying",
        "subscriptions",
    )

    def __init__(
        self,
        principal: Principal,
        outbox: Outbox,
        on_close: Callable[[int | None, str], None],
        on_drop: Callable[[], None] | None = None,
        on_end: Callable[[Subscription], None] | None = None,
    ) -> None:
        self.principal = principal
        self.outbox = outbox
        self.subscriptions: dict[str, Subscription] = {}
        self.replaying = 0
        # Cursors subscriptions started from that no checkpoint sent here has covered yet.
        self.floor: list[Snapshot] = []
        self.held_checkpoint: str | None = None
        self.closed = False
        self._on_close = on_close
        self._on_drop = on_drop
        self._on_end = on_end

    def send(self, kind: str, payload: dict[str, Any], sse_id: str | None = None) -> None:
        if self.closed:
            return
        if not self.outbox.put(Frame(kind, dumps({"type": kind, **payload}), sse_id)):
            self._overflow()

    def deliver(self, sub: Subscription, event: Event) -> bool:
        """Queue one change for this subscriber; False if it did not match."""
        if self.closed or sub.ended:
            return False
        variant = sub.variant(event)
        if variant is None:
            return False
        if variant == SCHEMA:
            self._schema_news(sub, event)
            return True
        if variant == UNDECODABLE:  # the stream goes on; the client learns which change it missed
            self.send("error", {"ref": sub.ref, **undecodable_error(event)})
            return True
        data = sub.render(event, variant)
        latest = sub.mode == "latest"
        # Row keys only matter for coalescing: computing one parses the key.
        key: str | None = f"{sub.ref}\x00{event.row_key}" if latest and event.decodable else None
        if latest and (event.op == "truncate" or key is None or _key_before(event) != event.pk):
            # A truncate or a key change reaches beyond one row: a later change coalesced into a
            # frame queued before it would be applied before it, and be wiped or left stale.
            # An undecodable change (key None) might be a key change: treated as one.
            self.outbox.forget_rows(f"{sub.ref}\x00")
            key = None
        frame = Frame("change", data, key=key)
        if not self.outbox.put(frame, coalesce=latest):
            self._overflow()
        return True

    def _schema_news(self, sub: Subscription, event: Event) -> None:
        if event.op == DROP:
            message = f"table {event.qualified} was dropped"
            self.send("resync_required", {"ref": sub.ref, "reason": "table_dropped", "message": message})
            self.end(sub)
        else:
            self.send("schema_changed", {"ref": sub.ref, **TableChange.from_event(event).payload(event)})

    def end(self, sub: Subscription) -> None:
        """The subscription is over (the client was told why): free its ref."""
        sub.ended = True
        if self._on_end is not None:
            self._on_end(sub)

    def checkpoint(self, cursor: str, data: str | None = None) -> None:
        """Queue a checkpoint; `data` is its frame, encoded once by the hub for every session."""
        if not self.subscriptions or self.closed:
            return
        if self.replaying:
            # A checkpoint promises everything before it was sent: hold it until replays finish.
            self.held_checkpoint = cursor
            return
        if self.floor:
            # A marker is forwarded when the listener gets to it, so it can be older than where a
            # subscription here started: sent, it would move the client's resume point back.
            snap = Snapshot.parse(cursor)
            if not all(snap.covers(start) for start in self.floor):
                return
            self.floor.clear()
        frame = Frame("checkpoint", data or checkpoint_frame(cursor), cursor)
        if not self.outbox.put(frame):
            self._overflow()

    def replay_finished(self) -> None:
        self.replaying -= 1
        if self.replaying == 0 and self.held_checkpoint is not None:
            cursor, self.held_checkpoint = self.held_checkpoint, None
            self.checkpoint(cursor)

    def _overflow(self) -> None:
        if self._on_drop is not None:
            self._on_drop()
        self.close(Close.SLOW, "slow consumer: resume from your last cursor")

    def close(self, code: int | None, reason: str) -> None:
        """Close with `code`; None: the connection is already lost (no close frame is sent)."""
        if not self.closed:
            self.closed = True
            self._on_close(code, reason)


class Hub:
    def __init__(self, checkpoint_interval: float = 0.0) -> None:
        # Clients get at most one checkpoint per interval (the newest, on the trailing edge):
        # at low change rates a checkpoint after every change would double the frames written.
        # A checkpoint sent later than it arrived still keeps its promise.
        self.checkpoint_interval = checkpoint_interval
        self._checkpoint_pending: str | None = None
        self._checkpoint_sent = 0.0
        self._checkpoint_timer: asyncio.TimerHandle | None = None
        self.by_table: dict[str, set[Subscription]] = {}
        self.sessions: set[Session] = set()
        self.waiters: dict[str, set[asyncio.Event]] = {}
        # Told of every DDL on a captured table before any subscriber (the catalog listens).
        self.on_table_change: list[Callable[[TableChange], None]] = []
        # Told of every row change after the subscribers (presence keeps its row images fresh).
        self.on_publish: list[Callable[[Event], None]] = []

    def add_session(self, session: Session) -> None:
        self.sessions.add(session)

    def remove_session(self, session: Session) -> None:
        self.sessions.discard(session)
        for sub in list(session.subscriptions.values()):
            self.unregister(sub)

    def register(self, sub: Subscription) -> None:
        self.by_table.setdefault(sub.table, set()).add(sub)
        sub.session.subscriptions[sub.ref] = sub

    def unregister(self, sub: Subscription) -> None:
        subs = self.by_table.get(sub.table)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.by_table[sub.table]
        if sub.session.subscriptions.get(sub.ref) is sub:
            del sub.session.subscriptions[sub.ref]

    def resync_all(self, reason: str, message: str) -> None:
        """The listener lost changes it cannot replay: every subscription must start over."""
        for session in tuple(self.sessions):
            for sub in list(session.subscriptions.values()):
                self.unregister(sub)
                session.send("resync_required", {"ref": sub.ref, "reason": reason, "message": message})

    @property
    def subscription_count(self) -> int:
        return sum(len(s) for s in self.by_table.values())

    def publish(self, event: Event) -> None:
        if event.op in SCHEMA_OPS:
            self._table_changed(event)
            return
        for sub in tuple(self.by_table.get(event.qualified, ())):
            sub.offer(event)
        for waiter in self.waiters.get(event.qualified, ()):
            waiter.set()
        for hook in self.on_publish:
            hook(event)

    def _table_changed(self, event: Event) -> None:
        """A DDL log row: update the catalog, then move, end or tell each subscription."""
        try:
            change = TableChange.from_event(event)
        except ValueError as exc:
            log.error("ignoring a DDL log row: %s", exc)
            return
        for listener in self.on_table_change:
            listener(change)
        keys = [change.key] if change.old_key is None else [change.old_key, change.key]
        for sub in [s for key in keys for s in tuple(self.by_table.get(key, ()))]:
            self.unregister(sub)
            found = None if change.dropped else sub.table_changed(change)
            if found is not None:
                sub.ended = True
                sub.session.send("error", wire.error_frame(found[0], found[1], ref=sub.ref))
                continue
            self.register(sub)  # under its new name, if the table was renamed: it follows
            sub.offer(event)
        for key in keys:
            for waiter in self.waiters.get(key, ()):
                waiter.set()

    def add_waiter(self, table: str) -> asyncio.Event:
        """An event set when a change of `table` arrives (long-poll waits on it)."""
        waiter = asyncio.Event()
        self.waiters.setdefault(table, set()).add(waiter)
        return waiter

    def remove_waiter(self, table: str, waiter: asyncio.Event) -> None:
        waiters = self.waiters.get(table)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self.waiters[table]

    def checkpoint_due(self) -> bool:
        """Would a checkpoint queued now go out at once (not on the interval's trailing edge)?"""
        return self._checkpoint_sent + self.checkpoint_interval <= time.monotonic()

    def checkpoint(self, cursor: str) -> None:
        self._checkpoint_pending = cursor
        wait = self._checkpoint_sent + self.checkpoint_interval - time.monotonic()
        if wait <= 0:
            self._send_checkpoint()
        elif self._checkpoint_timer is None:
            self._checkpoint_timer = asyncio.get_running_loop().call_later(wait, self._send_checkpoint)

    def _send_checkpoint(self) -> None:
        self._checkpoint_timer = None
        cursor, self._checkpoint_pending = self._checkpoint_pending, None
        if cursor is None:
            return
        self._checkpoint_sent = time.monotonic()
        data = checkpoint_frame(cursor)
        for session in tuple(self.sessions):
            session.checkpoint(cursor, data)

    def close(self) -> None:
        if self._checkpoint_timer is not None:
            self._checkpoint_timer.cancel()
            self._checkpoint_timer = None
