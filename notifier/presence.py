"""Presence: who is viewing or editing which row, across notifier replicas (docs/PROTOCOL.md).

A WebSocket client announces `{"type": "presence", "ref", "pk", "state"}` for a row of one of
its subscriptions. Each notifier writes its own sessions' announcements to the unlogged table
`rowcast.presence` (db/sql/presence_v1.sql), refreshes them while the session lives and deletes
them when it ends; a notifier that dies leaves rows that stop counting at `expires_at`. Every
notifier polls that table and tells its own subscribers what appeared, changed or went. So
presence crosses replicas and `--workers` processes without ever riding the NOTIFY channel
(public: any login can read or forge it) and without touching the change log.

Who: the token's `sub`, never a name the client picks; in open mode (no subjects) a display name
the client sends, cleaned and bounded. Where: a viewer is told of presence on a row only if the
row is in its subscription's view (token scope + `where`). The notifier knows rows only from the
log, so that is judged on the row's latest image there, and an unknown row (never changed since
capture began, or pruned) is invisible to a scoped or filtered viewer: fail closed. The same rule
bounds what an announcer may announce.

Gone within seconds (ROWCAST_PRESENCE_TIMEOUT, default 3 s), whatever way a client goes: a socket
that closes is withdrawn at once; a socket that holds presence and goes silent (a frozen process,
a black-holed network path: no close ever arrives) is pinged, and its presence is withdrawn once
it has been silent for the timeout (the socket stays open: anything it sends later, a pong
included, restores its presence); a notifier that dies or freezes stops renewing its rows' lease
(expires_at), so they stop counting after the timeout. Sockets without presence are not pinged
more than the WebSocket heartbeat does.

A row whose key changes (UPDATE ... SET id = 30 WHERE id = 3) takes its presence along: the
notifier of each announcer moves the rows (since kept) when it reads the update from the log, and
a later announcement naming the old key applies to the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from rowcast.db import queries
from rowcast.notifier.catalog import Catalog
from rowcast.notifier.events import Event
from rowcast.notifier.hub import LIVE, Hub, Session, Subscription
from rowcast.notifier.replay import Pool

from rowcast import jsonexact, names

log = logging.getLogger("rowcast.notifier.presence")

STATES = ("viewing", "editing")
TIMEOUT = 3.0  # ROWCAST_PRESENCE_TIMEOUT: a row's lease, and how long a socket may be silent
POLL = 0.5  # how often a notifier reads the table for other notifiers' changes
IMAGE_TTL = 2.0  # how long a row's latest image (for scope checks) is reused
IMAGE_CACHE = 10_000  # images kept at most
NAME_MAX = 40  # characters of an open-mode display name
PK_MAX = 512  # characters of a key, as JSON
LOOKUP_TIMEOUT_MS = 500  # statement_timeout of one image lookup
PURGE_EVERY = 30.0  # how often expired rows (of dead notifiers) are deleted


class PresenceError(Exception):
    """An announce the server refuses: becomes an `error` frame (code, message, ref)."""

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of rowcast.presence as every notifier reads it (expiry left out: a refresh is no news)."""

    session: str
    who: str
    schema: str
    table: str
    pk_text: str  # canonical JSON of the key (sorted, exact numbers)
    state: str
    since: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.session, self.schema, self.table, self.pk_text)

    @property
    def qualified(self) -> str:
        return names.canonical(self.schema, self.table)

    def frame(self, ref: str, gone: bool = False) -> dict[str, Any]:
        """The payload of a `presence` frame for a viewer's subscription `ref`."""
        return {
            "ref": ref,
            "schema": self.schema,
            "table": self.table,
            "pk": jsonexact.loads(self.pk_text),
            "who": self.who,
            "session": self.session,
            "state": None if gone else self.state,
            "since": self.since,
        }


Row = tuple[str, str, str]  # (schema, table, pk_text)


@dataclass(slots=True)
class Mine:
    """What one of this notifier's sessions has announced: (schema, table, pk_text) -> state."""

    id: str
    name: str | None = None
    rows: dict[Row, str] = field(default_factory=dict)
    ping: Callable[[], Awaitable[None]] | None = None  # a WebSocket ping, to hear whether it lives
    heard: float = field(default_factory=time.monotonic)  # last frame from the socket (pongs too)
    pinged: float = 0.0
    silent: bool = False  # silent for the timeout: its rows are withdrawn until it is heard again
    moved: dict[Row, Row] = field(default_factory=dict)  # a re-keyed row's old key -> its new one


def display_name(value: Any) -> str | None:
    """An open-mode display name: printable, whitespace collapsed, at most NAME_MAX characters."""
    if not isinstance(value, str):
        return None
    text = " ".join("".join(ch for ch in value if ch.isprintable() or ch.isspace()).split())
    return text[:NAME_MAX] or None


def canonical_pk(pk: Any, columns: tuple[str, ...]) -> str:
    """The key as canonical JSON; PresenceError unless it names exactly the table's key columns."""
    if not isinstance(pk, dict) or set(pk) != set(columns):
        raise PresenceError("bad_frame", f"pk must be an object of the key columns {list(columns)}")
    # Frames are parsed exactly (rowcast.jsoninput): a numeric key 7.5 arrives as a Decimal.
    if not all(v is None or isinstance(v, str | int | float | Decimal) for v in pk.values()):
        raise PresenceError("bad_frame", "pk values must be strings or numbers")
    text = jsonexact.dumps(pk, sort_keys=True)
    if len(text) > PK_MAX:
        raise PresenceError("bad_frame", f"pk is longer than {PK_MAX} characters as JSON")
    return text


def _who(session: Session, mine: Mine) -> str:
    """The token's subject; only in open mode (no subjects) the name the client gave."""
    if session.principal.anonymous:
        return mine.name or "anonymous"
    return session.principal.sub


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


# -- SQL -------------------------------------------------------------------------------------------

_UPSERT = queries.sql("presence_upsert")
_DELETE_ROW = queries.sql("presence_delete_row")
_DELETE_SESSION = queries.sql("presence_delete_session")
_DELETE_NOTIFIER = queries.sql("presence_delete_notifier")
# A row's key changed: the session's entry moves to the new key, `since` kept (merged with an entry
# the session already had there: editing wins). One statement, so readers see the move at once.
_MOVE = queries.sql("presence_move")
_REFRESH = queries.sql("presence_refresh")
_READ = queries.sql("presence_read")
_PURGE = queries.sql("presence_purge")
# The row's latest image in the log: what a scope or filter is judged on. A later truncate (or a
# delete: its "row" is null) means the row is gone.
_IMAGE = queries.sql("presence_row_image")


class Images:
    """Latest row images from the log, kept IMAGE_TTL seconds (None: unknown or gone)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.cache: dict[tuple[str, str, str], tuple[float, dict[str, Any] | None]] = {}

    def put(self, row: tuple[str, str, str], image: dict[str, Any] | None) -> None:
        """The row's image as a change just read from the log left it (fresher than any lookup)."""
        if len(self.cache) >= IMAGE_CACHE:
            self.cache.clear()
        self.cache[row] = (time.monotonic() + IMAGE_TTL, image)

    async def get(self, schema: str, table: str, pk_text: str) -> dict[str, Any] | None:
        key = (schema, table, pk_text)
        hit = self.cache.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        image = await self._read(schema, table, pk_text)
        if len(self.cache) >= IMAGE_CACHE:
            self.cache.clear()
        self.cache[key] = (now + IMAGE_TTL, image)
        return image

    async def _read(self, schema: str, table: str, pk_text: str) -> dict[str, Any] | None:
        try:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute(f"SET LOCAL statement_timeout = {LOOKUP_TIMEOUT_MS}")
                row = await (await conn.execute(_IMAGE, (schema, table, pk_text))).fetchone()
        except psycopg.Error as exc:  # unknown is invisible: fail closed
            log.warning("presence: no image of %s.%s %s: %s", schema, table, pk_text, exc)
            return None
        if row is None or row[0] is None:
            return None
        try:
            image = jsonexact.loads(row[0])
        except ValueError:
            return None
        return image if isinstance(image, dict) else None


class Presence:
    """This notifier's part of presence: its sessions' announcements, and the fan-out to its viewers."""

    def __init__(
        self,
        pool: Pool,
        hub: Hub,
        catalog: Catalog,
        max_rows: int,
        poll: float = POLL,
        timeout: float = TIMEOUT,
    ) -> None:
        self.pool = pool
        self.hub = hub
        self.catalog = catalog
        self.max_rows = max_rows
        self.poll = poll
        # One setting, three uses: the lease of a row (renewed every third of it), the silence
        # after which a socket is pinged (a third) and after which its presence is withdrawn.
        self.timeout = timeout
        self.refresh_every = timeout / 3
        self.watched = time.monotonic()
        self.id = secrets.token_hex(6)
        self.images = Images(pool)
        self.mine: dict[Session, Mine] = {}
        self.current: dict[tuple[str, str, str, str], Entry] = {}
        self.shown: dict[tuple[str, str, str, str], set[Subscription]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        # The rows (schema, table, pk_text) and tables someone is present on, for `observe`.
        self._rows: set[tuple[str, str, str]] = set()
        self._tables: set[tuple[str, str]] = set()
        self._aliases: set[Row] = set()  # old keys of re-keyed rows some session still maps
        hub.on_publish.append(self.observe)

    # -- sessions --------------------------------------------------------------------------------

    def attach(self, session: Session, ping: Callable[[], Awaitable[None]] | None = None) -> None:
        """A WebSocket session: it may announce, and it is told of others' presence.

        `ping` sends a WebSocket ping: a session that holds presence and goes silent is pinged, and
        its presence withdrawn if it stays silent (see `heard`)."""
        self.mine[session] = Mine(secrets.token_urlsafe(9), ping=ping)

    def heard(self, session: Session) -> None:
        """The socket sent a frame (a pong, a ping, any message): it lives. A session whose
        presence was withdrawn for silence gets it back."""
        mine = self.mine.get(session)
        if mine is None:
            return
        mine.heard = time.monotonic()
        if mine.silent:
            mine.silent = False
            if mine.rows:
                log.info("presence: session %s is heard again: its presence is back", mine.id)
                self._spawn(self._restore(session, mine))

    async def _restore(self, session: Session, mine: Mine) -> None:
        try:
            async with self.pool.connection(timeout=5) as conn:
                for row, state in list(mine.rows.items()):
                    await conn.execute(
                        _UPSERT, (mine.id, self.id, _who(session, mine), *row, state, self.timeout)
                    )
        except (psycopg.Error, OSError, TimeoutError) as exc:  # the next refresh rewrites them
            log.warning("presence: restoring session %s failed: %s", mine.id, exc)

    def detach(self, session: Session) -> None:
        """The session ended: its presence goes now (expiry covers a failed delete)."""
        mine = self.mine.pop(session, None)
        if mine is not None and mine.rows:
            self._spawn(self._execute(_DELETE_SESSION, (mine.id,)))
        if not self.mine:  # nobody left to tell: what we knew goes stale, start afresh
            self.current.clear()
            self.shown.clear()

    def welcome(self, sub: Subscription) -> None:
        """A subscription went live: tell it of the presence already there (a snapshot)."""
        if sub.session in self.mine:
            self._spawn(self._welcome(sub))

    async def _welcome(self, sub: Subscription) -> None:
        for entry in [e for e in self.current.values() if e.qualified == sub.table]:
            if await self._visible(sub, entry) and self.current.get(entry.key) == entry:
                self._show(sub, entry)

    # -- announcing ------------------------------------------------------------------------------

    async def announce(self, session: Session, frame: dict[str, Any]) -> None:
        """A client's presence frame: check it, then write it where every notifier reads."""
        mine = self.mine.get(session)
        ref = frame.get("ref")
        sub = session.subscriptions.get(ref) if isinstance(ref, str) else None
        if mine is None or sub is None:
            raise PresenceError(
                "unknown_ref", f"no subscription with ref {ref!r}", ref if isinstance(ref, str) else None
            )
        state = frame.get("state")
        if state is not None and state not in STATES:
            raise PresenceError("bad_frame", "state must be 'viewing', 'editing' or null", sub.ref)
        pk_text = self._pk(sub, frame.get("pk"))
        info = await self.catalog.get(sub.table)
        if info is None:
            raise PresenceError("unknown_table", f"unknown table: {sub.table}", sub.ref)
        row: Row = (info.schema, info.name, pk_text)
        row = mine.moved.get(row, row)  # the row's key changed since: the client names the old one
        if "name" in frame:
            mine.name = display_name(frame.get("name"))
        if state is None:
            await self._withdraw(mine, row)
            return
        if row not in mine.rows and len(mine.rows) >= self.max_rows:
            raise PresenceError(
                "too_many_presence_rows", f"at most {self.max_rows} rows announced per connection", sub.ref
            )
        if not await self._may_see(sub, row):
            raise PresenceError("forbidden", "this row is not in your subscription's view", sub.ref)
        if not mine.silent:
            await self._execute(
                _UPSERT, (mine.id, self.id, _who(session, mine), *row, state, self.timeout), sub.ref
            )
        mine.rows[row] = state
        self._rows.add(row)  # for `observe`, until the next poll says
        self._tables.add(row[:2])
        self._wake.set()

    def _pk(self, sub: Subscription, pk: Any) -> str:
        try:
            return canonical_pk(pk, sub.pk)
        except PresenceError as exc:
            raise PresenceError(exc.code, exc.message, sub.ref) from None

    async def _withdraw(self, mine: Mine, row: tuple[str, str, str]) -> None:
        if mine.rows.pop(row, None) is not None:
            for old in [old for old, new in mine.moved.items() if new == row]:
                del mine.moved[old]
            await self._execute(_DELETE_ROW, (mine.id, *row))
            self._wake.set()

    async def _may_see(self, sub: Subscription, row: tuple[str, str, str]) -> bool:
        """Whether the row is in this subscription's view (unscoped, unfiltered: every row)."""
        if not sub.principal.scope(sub.table) and not sub.filter.predicates:
            return True
        image = await self.images.get(*row)
        return image is not None and sub.in_view(image)

    async def _execute(self, sql: str, params: tuple[Any, ...], ref: str | None = None) -> None:
        try:
            async with self.pool.connection(timeout=5) as conn:
                await conn.execute(sql, params)
        except (psycopg.Error, TimeoutError) as exc:
            log.warning("presence: %s", exc)
            raise PresenceError(
                "unavailable", "presence is unavailable (the database did not answer)", ref
            ) from None

    # -- fan-out -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll, refresh and purge until cancelled; a failed round is logged and retried."""
        refreshed = purged = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll):
                    await self._wake.wait()
            self._wake.clear()
            try:
                now = time.monotonic()
                self._watch(now)
                if now - refreshed >= self.refresh_every:
                    refreshed = now
                    await self._refresh()
                if now - purged >= PURGE_EVERY:
                    purged = now
                    await self._execute(_PURGE, ())
                if self.mine:
                    await self.poll_once()
            except (PresenceError, psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("presence round failed: %s", getattr(exc, "message", exc))

    def _watch(self, now: float) -> None:
        """Ping sessions that hold presence and have been silent a third of the timeout; withdraw
        the presence of those silent for all of it (the socket stays: see `heard`)."""
        stalled = now - self.watched - max(self.poll, 0.5)
        self.watched = now
        for session, mine in self.mine.items():
            if stalled > 0:  # this process did not run (frozen, overloaded): nobody was heard
                mine.heard += stalled
            if not mine.rows or mine.silent or mine.ping is None or session.closed:
                continue
            quiet = now - mine.heard
            if quiet >= self.timeout:
                mine.silent = True
                log.info("presence: session %s silent for %.1fs: its presence is withdrawn", mine.id, quiet)
                self._spawn(self._execute(_DELETE_SESSION, (mine.id,)))
            elif quiet >= self.timeout / 3 and now - mine.pinged >= self.timeout / 3:
                mine.pinged = now
                self._spawn(self._ping(mine.ping))

    async def _ping(self, ping: Callable[[], Awaitable[None]]) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError, TimeoutError):
            async with asyncio.timeout(self.timeout):
                await ping()

    async def _refresh(self) -> None:
        """Push expiry forward for live sessions; rows lost (a crash emptied the table) are rewritten."""
        live = {m.id: (s, m) for s, m in self.mine.items() if m.rows and not m.silent}
        if not live:
            return
        async with self.pool.connection(timeout=5) as conn:
            cur = await conn.execute(_REFRESH, (self.timeout, list(live)))
            if cur.rowcount >= sum(len(m.rows) for _, m in live.values()):
                return
            for session, mine in live.values():
                for row, state in mine.rows.items():
                    await conn.execute(
                        _UPSERT, (mine.id, self.id, _who(session, mine), *row, state, self.timeout)
                    )

    async def poll_once(self) -> None:
        """Read the table; tell viewers what appeared, changed state or went."""
        async with self.pool.connection(timeout=5) as conn:
            rows = await (await conn.execute(_READ)).fetchall()
        fresh: dict[tuple[str, str, str, str], Entry] = {}
        for session_id, who, schema, table, pk, state, since in rows:
            pk_text = jsonexact.dumps(jsonexact.loads(pk), sort_keys=True)
            entry = Entry(session_id, who, schema, table, pk_text, state, _iso(since))
            fresh[entry.key] = entry
        before, self.current = self.current, fresh
        self._rows = {(e.schema, e.table, e.pk_text) for e in fresh.values()}
        self._tables = {(e.schema, e.table) for e in fresh.values()}
        for subs in self.shown.values():
            subs.difference_update([s for s in subs if s.session.closed])
        for key, entry in before.items():
            if key not in fresh:
                self._gone(entry)
        for key, entry in fresh.items():
            if before.get(key) != entry:
                await self._tell(entry)

    def observe(self, event: Event) -> None:
        """A change of a row someone is present on: judge who may see that presence again now.

        An update can move the row into or out of a viewer's scope or filter; its new image (None
        once deleted) replaces the cached one, so nobody waits for the cache to expire.
        """
        if (event.schema, event.table) not in self._tables or event.op not in ("insert", "update", "delete"):
            return
        try:
            row = (event.schema, event.table, jsonexact.dumps(event.pk, sort_keys=True))
            old = self._old_key(event)
        except ValueError:  # a key that does not parse: no presence can be on it
            return
        if event.op == "insert" and row in self._aliases:  # the old key is a new row now
            self._aliases.discard(row)
            for mine in self.mine.values():
                mine.moved.pop(row, None)
        if old is not None and old in self._rows:
            self.images.put(old, None)
            self.images.put(row, event.row if event.decodable else None)
            self._move(old, row)
        if row in self._rows:
            # An image that does not parse is unknown: invisible to scoped and filtered viewers.
            self.images.put(row, event.row if event.decodable else None)
            self._spawn(self._recheck(row))

    @staticmethod
    def _old_key(event: Event) -> Row | None:
        """An update that changed the row's key (`old` holds key columns): the old key."""
        if event.op != "update" or not event.decodable or not event.old or not isinstance(event.pk, dict):
            return None
        if not any(column in event.old for column in event.pk):
            return None
        before = {column: event.old.get(column, value) for column, value in event.pk.items()}
        return (event.schema, event.table, jsonexact.dumps(before, sort_keys=True))

    def _move(self, old: Row, new: Row) -> None:
        """The row `old` now has the key of `new`: this notifier's sessions' presence follows it
        (the other notifiers move theirs: each reads the same log)."""
        for mine in self.mine.values():
            state = mine.rows.pop(old, None)
            if state is None:
                continue
            if mine.rows.get(new) != "editing":
                mine.rows[new] = state
            for before, after in list(mine.moved.items()):
                if after == old:
                    mine.moved[before] = new
            mine.moved[old] = new
            if len(self._aliases) >= IMAGE_CACHE:
                self._aliases.clear()  # only forgets to drop aliases of reused keys: bounded memory
            self._aliases.add(old)
            while len(mine.moved) > self.max_rows:  # bounded: the oldest moves are forgotten
                del mine.moved[next(iter(mine.moved))]
            self._rows.add(new)
            if not mine.silent:
                self._spawn(self._execute(_MOVE, (mine.id, *old, new[2])))

    async def _recheck(self, row: tuple[str, str, str]) -> None:
        for entry in [e for e in self.current.values() if (e.schema, e.table, e.pk_text) == row]:
            await self._tell(entry, changed=False)

    async def _tell(self, entry: Entry, changed: bool = True) -> None:
        """Send `entry` to the viewers that may see it (all of them if it changed, else the new
        ones) and withdraw it from those that saw it and may no longer."""
        shown = self.shown.get(entry.key, set())
        for sub in tuple(self.hub.by_table.get(entry.qualified, ())):
            if self.current.get(entry.key) != entry:
                return  # gone or changed meanwhile: the poll that saw it tells
            if await self._visible(sub, entry):
                if changed or sub not in shown:
                    self._show(sub, entry)
            elif sub in shown:  # no longer in its view: it goes from this viewer's list
                shown.discard(sub)
                sub.session.send("presence", entry.frame(sub.ref, gone=True))

    def _show(self, sub: Subscription, entry: Entry) -> None:
        self.shown.setdefault(entry.key, set()).add(sub)
        sub.session.send("presence", entry.frame(sub.ref))

    def _gone(self, entry: Entry) -> None:
        for sub in self.shown.pop(entry.key, ()):
            if sub.session.subscriptions.get(sub.ref) is sub:
                sub.session.send("presence", entry.frame(sub.ref, gone=True))

    async def _visible(self, sub: Subscription, entry: Entry) -> bool:
        mine = self.mine.get(sub.session)
        if mine is None or mine.id == entry.session or sub.state != LIVE or sub.ended:
            return False  # not a WebSocket viewer, its own presence, or not live yet
        if sub.session.subscriptions.get(sub.ref) is not sub or sub.table != entry.qualified:
            return False
        return await self._may_see(sub, (entry.schema, entry.table, entry.pk_text))

    # -- lifecycle -------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(self._quietly(coro), name="rowcast-presence")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _quietly(self, coro: Any) -> None:
        with contextlib.suppress(PresenceError):
            await coro
        self._wake.set()

    async def close(self) -> None:
        """Shutdown: this notifier's presence goes at once rather than at expiry."""
        for task in tuple(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        with contextlib.suppress(PresenceError):
            await self._execute(_DELETE_NOTIFIER, (self.id,))
