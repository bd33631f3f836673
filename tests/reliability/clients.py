"""Subscribers: the Python client (rowcast.client.subscribe) and a raw WebSocket client.

Both record what they receive into a `Feed` per subscription: every frame (the raw client, before
its own per-row rule) or every change the library let through (the Python client), the cursors
they resumed from, and the table they materialise. The oracle judges the feeds afterwards.

An undecodable change (jsonb nested deeper than rowcast parses, model.DEEP) reaches a subscriber
as a notice without row data: the Python client yields it as a Change with error
"undecodable_change" (with its key when the server sent the frame, without when the server could
not filter it), the raw client gets an error frame of that code. Both record it as a notice; a
real application would reload that row, so the feed marks the row UNKNOWN (or, without a key,
the oracle excuses that change's keys in the materialised table).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from rowcast.client import Change, RowRule, subscribe
from tests.reliability.model import ROLLBACK_MARK, TABLES, UNKNOWN, Snap, View, canon, digest, key_of, loads


@dataclass(frozen=True, slots=True)
class Received:
    """One change frame as it arrived (compact: rows are kept as digests)."""

    id: int
    op: str
    moved: str | None
    pk: str
    row: int
    old: int
    old_columns: tuple[str, ...] | None
    connection: int
    error: str | None = None  # "undecodable_change": a notice, no row data


@dataclass
class Feed:
    """One subscription's view of the stream, and the table it materialises from it."""

    name: str
    view: View
    start: str | None = None  # the cursor the subscription first started from
    cursor: str | None = None
    rows: dict[str, int] = field(default_factory=dict)  # key -> digest of the row
    last: dict[str, int] = field(default_factory=dict)  # the per-row rule: key -> last applied id
    truncated: int = 0
    received: list[Received] = field(default_factory=list)
    admitted: list[int] = field(default_factory=list)
    admitted_set: set[int] = field(default_factory=set)
    dropped: int = 0  # duplicates the per-row rule dropped (replays, resumes)
    resumes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notices: set[int] = field(default_factory=set)  # undecodable changes this feed was told of
    repeated_notices: int = 0  # key-less notices told again after a resume (the client cannot key them)

    @property
    def start_snapshot(self) -> Snap | None:
        return Snap.parse(self.start) if self.start else None

    def load_snapshot(self, cursor: str, rows: list[dict[str, Any]]) -> None:
        """A late joiner's starting point: rows at id 0, then changes from `cursor` on."""
        pk = TABLES[self.view.table]
        self.start = self.cursor = cursor
        self.rows = {
            key_of(self.view.table, {c: r[c] for c in pk}): digest(r) for r in rows if self.view.visible(r)
        }

    def record(self, frame: dict[str, Any], connection: int) -> None:
        old, row = frame.get("old"), frame.get("row")
        row_text, old_text = canon(row), canon(old)
        if ROLLBACK_MARK in row_text or ROLLBACK_MARK in old_text:
            self.problems.append(f"a rolled-back write reached the client: change {frame['id']}")
        self.received.append(
            Received(
                int(frame["id"]),
                str(frame["op"]),
                frame.get("moved"),
                canon(frame.get("pk")),
                hash(row_text),
                hash(old_text),
                tuple(sorted(old)) if isinstance(old, dict) else None,
                connection,
            )
        )

    def admit(self, frame: dict[str, Any]) -> bool:
        """The per-row rule of docs/PROTOCOL.md, written for the test (not rowcast.client's)."""
        change_id, op = int(frame["id"]), frame["op"]
        if op == "truncate":
            if change_id <= self.truncated:
                return False
            self.truncated = change_id
            return True
        if change_id < self.truncated:
            return False
        key = key_of(self.view.table, frame.get("pk"))
        if change_id <= self.last.get(key, 0):
            return False
        self.last[key] = change_id
        return True

    def apply(self, frame: dict[str, Any]) -> None:
        """Materialise an admitted change (and check it is new and in per-row order)."""
        change_id, op, table = int(frame["id"]), frame["op"], self.view.table
        if change_id in self.admitted_set:
            self.problems.append(f"change {change_id} delivered twice after the client's per-row rule")
        self.admitted.append(change_id)
        self.admitted_set.add(change_id)
        if op == "truncate":
            self.rows.clear()
            self.last.clear()
            return
        pk = frame.get("pk") or {}
        key = key_of(table, pk)
        if op == "delete":
            self.rows.pop(key, None)
            return
        self.rows[key] = digest(frame.get("row"))
        old = frame.get("old") or {}
        if op == "update" and any(c in old for c in pk):
            old_key = key_of(table, {c: old.get(c, v) for c, v in pk.items()})
            # The row left its old key; unless a newer change of that key was already applied.
            if self.last.get(old_key, 0) < change_id:
                self.last[old_key] = change_id
                self.rows.pop(old_key, None)

    def take_notice(self, change_id: int, op: str, pk: dict[str, Any] | None, connection: int) -> None:
        """An undecodable change: its id, op and maybe its key, no row. The app would reload it."""
        self.received.append(
            Received(
                change_id,
                op,
                None,
                canon(pk),
                digest(None),
                digest(None),
                None,
                connection,
                "undecodable_change",
            )
        )
        self.notices.add(change_id)
        if pk is None:  # the server could not even say which row: nothing to order by
            if change_id in self.admitted_set:
                self.repeated_notices += 1
                return
            self.admitted.append(change_id)
            self.admitted_set.add(change_id)
            return
        key = key_of(self.view.table, pk)
        if change_id <= self.last.get(key, 0):
            self.problems.append(
                f"change {change_id} of {key} came after change {self.last[key]} of that row"
            )
        if change_id in self.admitted_set:
            self.problems.append(f"change {change_id} delivered twice after the client's per-row rule")
        self.last[key] = change_id
        self.admitted.append(change_id)
        self.admitted_set.add(change_id)
        if op == "delete":
            self.rows.pop(key, None)
        else:
            self.rows[key] = UNKNOWN

    def take_raw(self, frame: dict[str, Any], connection: int) -> None:
        self.record(frame, connection)
        if self.admit(frame):
            self.apply(frame)
        else:
            self.dropped += 1

    def take_python(self, change: Change, connection: int) -> None:
        if change.error is not None:
            if change.error != "undecodable_change":
                self.problems.append(f"change {change.id} came with error {change.error!r}")
            self.take_notice(change.id, change.op, change.pk, connection)
            return
        frame = {
            "id": change.id, "op": change.op, "moved": change.moved, "pk": change.pk,
            "row": change.row, "old": change.old,
        }  # fmt: skip
        self.record(frame, connection)
        key = key_of(self.view.table, change.pk)
        if change.op != "truncate" and change.id <= self.last.get(key, 0):
            self.problems.append(
                f"change {change.id} of {key} came after change {self.last[key]} of that row"
            )
        if change.op == "truncate":
            self.truncated = change.id
        else:
            self.last[key] = change.id
        self.apply(frame)


class Subscriber:
    """A client the scenario drives: started on a replica, dropped, moved, slowed, stopped."""

    kind = "?"

    def __init__(self, name: str, token: str | None, rng: random.Random) -> None:
        self.name = name
        self.token = token
        self.rng = rng
        self.task: asyncio.Task[None] | None = None
        self.base = ""
        self.slow_until = 0.0
        self.stall_until = 0.0  # reads nothing at all until then
        self.connections = 0
        self.restarts = 0
        self.failure: BaseException | None = None

    @property
    def feeds(self) -> list[Feed]:
        raise NotImplementedError

    async def session(self, base: str) -> None:
        raise NotImplementedError

    def start(self, base: str) -> None:
        self.base = base
        self.task = asyncio.create_task(self._guarded(base), name=f"subscriber-{self.name}")

    async def _guarded(self, base: str) -> None:
        try:
            await self.session(base)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the scenario reports it; the client stays down
            self.failure = exc
            raise

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
            self.task = None

    async def restart(self, base: str) -> None:
        """Drop the connection at once and resume from the last cursor (maybe elsewhere)."""
        await self.stop()
        self.restarts += 1
        self.start(base)

    async def pace(self) -> None:
        now = time.monotonic()
        if now < self.stall_until:
            await asyncio.sleep(self.stall_until - now)
        elif now < self.slow_until:
            await asyncio.sleep(self.rng.uniform(0.002, 0.02))

    def caught_up(self, expected: Callable[[Feed], bool]) -> bool:
        return all(expected(f) for f in self.feeds)


class PyClient(Subscriber):
    """rowcast.client.subscribe: one subscription; its RowRule lives across restarts."""

    kind = "python"

    def __init__(self, name: str, feed: Feed, token: str | None, rng: random.Random) -> None:
        super().__init__(name, token, rng)
        self.feed = feed
        self.rule = RowRule()

    @property
    def feeds(self) -> list[Feed]:
        return [self.feed]

    def _status(self, state: str, cursor: str | None) -> None:
        if state == "live":
            self.connections += 1
            if self.feed.start is None:
                self.feed.start = cursor
        if cursor is not None and state in ("live", "checkpoint"):
            self.feed.cursor = cursor

    async def session(self, base: str) -> None:
        feed, view = self.feed, self.feed.view
        if feed.cursor is not None:
            feed.resumes.append(feed.cursor)
        async for change in subscribe(
            base, view.table, where=view.where, cursor=feed.cursor, mode=view.mode, token=self.token,
            on_status=self._status, max_backoff=0.5, rule=self.rule,
        ):  # fmt: skip
            feed.take_python(change, self.connections)
            await self.pace()


class RawClient(Subscriber):
    """A WebSocket client written against docs/PROTOCOL.md: several subscriptions, one socket."""

    kind = "raw"

    def __init__(
        self,
        name: str,
        feeds: dict[str, Feed],
        token: str | None,
        rng: random.Random,
        replicas: Callable[[], list[str]],
    ) -> None:
        super().__init__(name, token, rng)
        self.by_ref = feeds
        self.replicas = replicas
        self.marks = 0
        self.close_codes: dict[int | None, int] = {}

    @property
    def feeds(self) -> list[Feed]:
        return list(self.by_ref.values())

    async def session(self, base: str) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.ws_connect(base.replace("http", "ws", 1) + "/ws", headers=headers) as ws:
                        self.connections += 1
                        await self._subscribe_all(ws)
                        live: set[str] = set()
                        async for msg in ws:
                            if msg.type != aiohttp.WSMsgType.TEXT or not self._handle(msg.data, live):
                                break
                            await self.pace()
                    self.close_codes[ws.close_code] = self.close_codes.get(ws.close_code, 0) + 1
                except (aiohttp.ClientError, OSError, TimeoutError):
                    pass
                await asyncio.sleep(self.rng.uniform(0.02, 0.3))
                if self.rng.random() < 0.5:  # reconnect where it was, or move to another replica
                    base = self.rng.choice(self.replicas())
                self.base = base

    async def _subscribe_all(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        for ref, feed in self.by_ref.items():
            frame: dict[str, Any] = {
                "type": "subscribe",
                "ref": ref,
                "table": feed.view.table,
                "mode": feed.view.mode,
            }
            if feed.view.where:
                frame["where"] = feed.view.where
            if feed.cursor is not None:
                frame["cursor"] = feed.cursor
                feed.resumes.append(feed.cursor)
            await ws.send_str(json.dumps(frame))

    def _handle(self, text: str, live: set[str]) -> bool:
        """Apply one server frame; False to drop the connection and reconnect."""
        frame = loads(text)
        kind = frame.get("type")
        if kind == "change":
            self.by_ref[frame["ref"]].take_raw(frame, self.connections)
        elif kind == "checkpoint":
            self.marks += 1
            for ref in live:
                self.by_ref[ref].cursor = frame["cursor"]
        elif kind == "subscribed":
            feed = self.by_ref[frame["ref"]]
            live.add(frame["ref"])
            if feed.start is None:
                feed.start = frame["cursor"]
            feed.cursor = frame["cursor"]
        elif (
            kind == "error" and frame.get("code") == "undecodable_change" and frame.get("ref") in self.by_ref
        ):
            self.by_ref[frame["ref"]].take_notice(int(frame["id"]), str(frame["op"]), None, self.connections)
        elif kind == "error" and frame.get("code") == "unavailable":
            return False  # the database is restarting: reconnect and resume
        elif kind in ("error", "resync_required"):
            target = self.by_ref.get(frame.get("ref", "")) or self.feeds[0]
            target.problems.append(f"unexpected frame: {text[:300]}")
            return False
        return True
