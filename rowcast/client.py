"""Python client: `async for change in subscribe(url, "books")`, exactly once per change.

It reconnects with backoff and jitter, resumes from its last cursor, and applies the per-row rule
(docs/PROTOCOL.md "Client rules"), so duplicates from a resume and stale changes never reach the
caller, and each row's changes come in commit order.

Numbers are exact (rowcast.jsonexact): integers are `int`, other numbers `decimal.Decimal` whose
str() is the text Postgres wrote, never a float. A change the client cannot parse (a row holding
jsonb nested deeper than jsonexact.MAX_DEPTH) or the server could not filter or project (an
`undecodable_change` error frame) does not end the subscription: it is yielded as a `Change` with
`error == "undecodable_change"` and `row`/`old` None (see `Change`).

Presence (docs/PROTOCOL.md "Presence"): pass `presence=Presence()` to `subscribe`, then
`await presence.announce({"id": 7}, "editing")` while iterating; `presence.others()` lists who
else is viewing or editing rows of the table. Announcements are sent again after a reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from rowcast import jsonexact, names
from rowcast.wire import Close

log = logging.getLogger("rowcast.client")

CLOSE_AUTH, CLOSE_SLOW = Close.AUTH, Close.SLOW


UNDECODABLE = "undecodable_change"


class SubscriptionError(Exception):
    """The server refused the subscription (bad table, filter, token...): retrying will not help."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class ResyncRequired(Exception):
    """Start over: reload the snapshot and subscribe from its cursor.

    `reason` is `cursor_expired` (the cursor is older than the server's log) or `table_dropped`.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Change:
    """One change. If `error` is set ("undecodable_change") its row could not be had: `row` and
    `old` are None; `raw` is the frame's text when the server sent the change but this client
    could not parse it (`pk` read from it where possible), None when the server could not filter or
    project it for this subscription (`pk` None too). Reload the row (or the table) if you need it.
    """

    id: int
    schema: str
    table: str
    op: str
    pk: dict[str, Any] | None
    row: dict[str, Any] | None
    old: dict[str, Any] | None
    actor: dict[str, Any]
    at: str
    moved: str | None = None
    error: str | None = None
    raw: str | None = None

    @classmethod
    def undecodable(cls, f: dict[str, Any], raw: str | None) -> Change:
        """From what could be read of a change frame this client cannot parse, or an error frame."""
        pk = f.get("pk")
        return cls(
            f["id"],
            f["schema"],
            f["table"],
            f["op"],
            pk if isinstance(pk, dict) else None,
            None,
            None,
            {},
            str(f.get("at") or ""),
            f.get("moved"),
            UNDECODABLE,
            raw,
        )

    @classmethod
    def from_frame(cls, f: dict[str, Any]) -> Change:
        return cls(
            f["id"],
            f["schema"],
            f["table"],
            f["op"],
            f.get("pk"),
            f.get("row"),
            f.get("old"),
            f.get("actor") or {},
            f["at"],
            f.get("moved"),
        )


@dataclass(frozen=True)
class Seen:
    """Someone else on a row: `who` (a token subject, or an open-mode display name), their
    connection (`session`: one person in two tabs is two), "viewing" or "editing", since when."""

    pk: dict[str, Any]
    who: str
    session: str
    state: str
    since: str


class Presence:
    """Presence over one `subscribe` stream: what this client announces, and who else is there.

    `name` is the display name others see in open mode (the server uses the token's subject in
    token mode). `on_change(others)` hears every change of the list; `on_error(frame)` hears
    refused announcements (the stream goes on).
    """

    def __init__(
        self,
        name: str | None = None,
        on_change: Callable[[list[Seen]], None] | None = None,
        on_error: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.name = name
        self.on_change = on_change
        self.on_error = on_error
        self.mine: dict[str, tuple[dict[str, Any], str]] = {}
        self.moved: dict[str, dict[str, Any]] = {}  # a re-keyed row's old key -> the pk it has now
        self._others: dict[tuple[str, str], Seen] = {}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ref = ""

    async def announce(self, pk: dict[str, Any], state: str | None) -> None:
        """Tell others this client is "viewing" or "editing" the row `pk`, or None: no longer.

        A row that an update moved to another key is announced under its new key."""
        pk = self.moved.get(jsonexact.dumps(pk, sort_keys=True), pk)
        key = jsonexact.dumps(pk, sort_keys=True)
        if state is None:
            self.mine.pop(key, None)
            for old in [old for old, now in self.moved.items() if jsonexact.dumps(now, sort_keys=True) == key]:
                del self.moved[old]
        else:
            self.mine[key] = (pk, state)
        await self._send(pk, state)

    def follow(self, change: Change) -> bool:
        """A change that moved a row to a new key (an update whose `old` holds key columns): the
        server moved this client's presence on it along, so follow (docs/PROTOCOL.md "Presence")."""
        if not isinstance(change.pk, dict):
            return False
        if change.op == "insert":  # a new row under an old key: that key names it again
            return self.moved.pop(jsonexact.dumps(change.pk, sort_keys=True), None) is not None
        if change.op != "update" or not change.old:
            return False
        if not any(column in change.old for column in change.pk):
            return False
        before = {column: change.old.get(column, value) for column, value in change.pk.items()}
        was = self.mine.pop(jsonexact.dumps(before, sort_keys=True), None)
        if was is None:
            return False
        key = jsonexact.dumps(change.pk, sort_keys=True)
        if self.mine.get(key, (None, None))[1] != "editing":
            self.mine[key] = (change.pk, was[1])
        old = jsonexact.dumps(before, sort_keys=True)
        for alias, now in list(self.moved.items()):
            if jsonexact.dumps(now, sort_keys=True) == old:
                self.moved[alias] = change.pk
        self.moved[old] = change.pk
        while len(self.moved) > 64:
            del self.moved[next(iter(self.moved))]
        return True

    def others(self, pk: dict[str, Any] | None = None) -> list[Seen]:
        """Who else is there: on every row, or on the row `pk`."""
        seen = sorted(self._others.values(), key=lambda s: s.since)
        return seen if pk is None else [s for s in seen if s.pk == pk]

    async def _send(self, pk: dict[str, Any], state: str | None) -> None:
        if self._ws is None or self._ws.closed:
            return  # sent when the next socket's subscription is acknowledged
        frame: dict[str, Any] = {"type": "presence", "ref": self._ref, "pk": pk, "state": state}
        if self.name:
            frame["name"] = self.name
        await self._ws.send_str(jsonexact.dumps(frame))

    async def _start(self, ws: aiohttp.ClientWebSocketResponse, ref: str) -> None:
        """The subscription is acknowledged on a new socket: the server's list follows; ours again."""
        self._ws, self._ref = ws, ref
        self._lost()
        for pk, state in list(self.mine.values()):
            await self._send(pk, state)

    def _stop(self) -> None:
        self._ws = None
        self._lost()

    def _lost(self) -> None:
        if self._others:
            self._others.clear()
            self._changed()

    def _apply(self, frame: dict[str, Any]) -> None:
        pk, session = frame.get("pk"), frame.get("session")
        if not isinstance(pk, dict) or not isinstance(session, str):
            return
        key = (session, jsonexact.dumps(pk, sort_keys=True))
        if frame.get("state") is None:
            if self._others.pop(key, None) is None:
                return
        else:
            who, state, since = str(frame.get("who", "")), str(frame["state"]), str(frame.get("since", ""))
            self._others[key] = Seen(pk, who, session, state, since)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.others())


def row_key(table: str, pk: dict[str, Any] | None) -> str:
    return table + "\x00" + jsonexact.dumps(pk, sort_keys=True)


@dataclass
class RowRule:
    """The per-row rule: apply a change only if its id beats the last one applied to that row."""

    last: dict[str, int] = field(default_factory=dict)
    truncated: dict[str, int] = field(default_factory=dict)

    def admit(self, change: Change) -> bool:
        table = names.canonical(change.schema, change.table)
        if change.id < self.truncated.get(table, 0):
            return False
        if change.error is not None and change.pk is None:
            return True  # nothing to key it by (the server could not say): always tell the caller
        if change.op == "truncate":
            if change.id <= self.truncated.get(table, 0):
                return False
            self.truncated[table] = change.id
            prefix = table + "\x00"
            self.last = {k: v for k, v in self.last.items() if not k.startswith(prefix)}
            return True
        key = row_key(table, change.pk)
        if change.id <= self.last.get(key, 0):
            return False
        self.last[key] = change.id
        if change.op == "update" and change.old and change.pk and any(k in change.old for k in change.pk):
            old_pk = {k: change.old.get(k, v) for k, v in change.pk.items()}
            self.last[row_key(table, old_pk)] = change.id
        return True


def _error_code(data: dict[str, Any]) -> str:
    """An error frame's code: `error` (docs/PROTOCOL.md), or `code` from servers before it."""
    return str(data.get("error") or data.get("code") or "error")


def _for_presence(presence: Presence, data: dict[str, Any]) -> bool:
    """Route a presence frame, or an error answering one, to `presence`; False for other frames."""
    if data.get("type") == "presence":
        presence._apply(data)
        return True
    if data.get("type") == "error" and data.get("about") == "presence":
        if presence.on_error is not None:
            presence.on_error(data)
        return True
    return False


def default_url() -> str:
    """Where `rowcast tail` and the README's examples look: $ROWCAST_URL, else the notifier that
    `rowcast up` starts with the same environment (http://$ROWCAST_HOST:$ROWCAST_PORT, by default
    http://127.0.0.1:8080; a wildcard bind is reached on loopback)."""
    if os.environ.get("ROWCAST_URL"):
        return os.environ["ROWCAST_URL"]
    host = os.environ.get("ROWCAST_HOST") or "127.0.0.1"
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)  # noqa: S104
    return f"http://{host}:{os.environ.get('ROWCAST_PORT') or 8080}"


def _log_failure(url: str, failures: int, exc: BaseException) -> None:
    """Each failed attempt at debug level; the 3rd in a row and every 20th after as a warning."""
    level = logging.WARNING if failures == 3 or failures % 20 == 0 else logging.DEBUG
    log.log(
        level,
        "no rowcast notifier answers at %s (%d attempts, last: %s); still retrying: "
        "is the server running, and is the URL right (ROWCAST_URL)?",
        url,
        failures,
        str(exc) or type(exc).__name__,
    )


def ws_url(url: str) -> str:
    base = url.rstrip("/")
    if base.startswith("http"):
        base = "ws" + base[4:]
    return base if base.endswith("/ws") else base + "/ws"


async def subscribe(
    url: str,
    table: str,
    *,
    schema: str | None = None,
    where: dict[str, Any] | None = None,
    columns: list[str] | None = None,
    cursor: str | None = None,
    mode: str = "all",
    token: str | None = None,
    get_token: Callable[[], Awaitable[str]] | None = None,
    on_status: Callable[[str, str | None], None] | None = None,
    on_schema: Callable[[dict[str, Any]], None] | None = None,
    max_backoff: float = 5.0,
    rule: RowRule | None = None,
    session: aiohttp.ClientSession | None = None,
    presence: Presence | None = None,
) -> AsyncIterator[Change]:
    """Yield every change of `table` (matching `where`) from `cursor` (or from now), forever.

    `table` is a name as Postgres reads it (`books`, `audit.log`, `co."x.y"`); with `schema`
    given, `schema` and `table` are taken exactly as written, as two fields.

    `on_status(state, cursor)` hears "live", "reconnecting" and each new cursor ("checkpoint").
    `on_schema(frame)` hears each `schema_changed` frame (the table's columns, key, former name).
    `presence` (a `Presence`) announces rows and hears who else is on them (see `Presence`).
    When no notifier answers at `url`, it keeps trying and logs a warning on the 3rd failure in a
    row and every 20th after (logger `rowcast.client`).
    """
    rule = rule or RowRule()
    own_session = session is None
    http = session or aiohttp.ClientSession()
    delay = 0.1
    failures = 0
    try:
        while True:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                async with http.ws_connect(ws_url(url), headers=headers, heartbeat=30) as ws:
                    frame: dict[str, Any] = {"type": "subscribe", "ref": "c", "table": table, "mode": mode}
                    if schema is not None:
                        frame["schema"] = schema
                    if where is not None:
                        frame["where"] = where
                    if columns is not None:
                        frame["columns"] = columns
                    if cursor is not None:
                        frame["cursor"] = cursor
                    await ws.send_str(jsonexact.dumps(frame))
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        raw: str | None = None  # set if the frame is too deep to parse whole
                        try:
                            data = jsonexact.loads(msg.data)
                        except jsonexact.TooDeep:
                            # A row nested deeper than we parse: the rest of the frame still routes it.
                            data, raw = jsonexact.shallow(msg.data), msg.data
                        kind = data.get("type")
                        if presence is not None and _for_presence(presence, data):
                            continue
                        if kind == "change":
                            if raw is None:
                                change = Change.from_frame(data)
                            else:
                                change = Change.undecodable(data, raw)
                            if rule.admit(change):
                                if presence is not None:
                                    presence.follow(change)
                                yield change
                        elif kind == "error" and _error_code(data) == UNDECODABLE and "id" in data:
                            # The server could not filter or project one change: say so, go on.
                            yield Change.undecodable(data, None)
                        elif kind in ("checkpoint", "subscribed"):
                            cursor = data["cursor"]
                            if kind == "subscribed":
                                delay, failures = 0.1, 0
                                if presence is not None:
                                    await presence._start(ws, "c")
                                if on_status:
                                    on_status("live", cursor)
                            elif on_status:
                                on_status("checkpoint", cursor)
                        elif kind == "schema_changed":
                            if on_schema:
                                on_schema(data)
                        elif kind == "resync_required":
                            reason = str(data.get("reason", ""))
                            raise ResyncRequired(str(data.get("message") or reason), reason)
                        elif kind == "error":
                            if _error_code(data) == "unavailable":
                                break
                            raise SubscriptionError(_error_code(data), data.get("message", ""))
                    close_code = ws.close_code
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in (401, 403) and get_token is None:
                    raise SubscriptionError(
                        "unauthorized" if exc.status == 401 else "forbidden", exc.message
                    ) from None
                if exc.status in (401, 403) and get_token is not None:
                    token = await get_token()
                else:  # something else answers there (404: not a notifier)
                    failures += 1
                    _log_failure(url, failures, exc)
                close_code = None
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                failures += 1
                _log_failure(url, failures, exc)
                close_code = None
            if presence is not None:
                presence._stop()  # who else is there is unknown until the next socket says
            if on_status:
                on_status("reconnecting", cursor)
            if close_code == CLOSE_AUTH and get_token is not None:
                token = await get_token()
                continue
            if close_code == CLOSE_SLOW:
                continue  # resume at once from the cursor
            await asyncio.sleep(random.uniform(0, delay))  # noqa: S311 -- jitter
            delay = min(delay * 2, max_backoff)
    finally:
        if own_session:
            await http.close()
