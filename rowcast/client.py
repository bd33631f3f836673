"""Python client: `async for change in subscribe(url, "books")`, exactly once per change.

It reconnects with backoff and jitter, resumes from its last cursor, and applies the per-row rule
(docs/PROTOCOL.md "Client rules"), so duplicates from a resume and stale changes never reach the
caller, and each row's changes come in commit order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

log = logging.getLogger("rowcast.client")

CLOSE_AUTH, CLOSE_SLOW = 4001, 4008


class SubscriptionError(Exception):
    """The server refused the subscription (bad table, filter, token...): retrying will not help."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class ResyncRequired(Exception):
    """The cursor is older than the server's log: reload the snapshot, subscribe from its cursor."""


@dataclass(frozen=True)
class Change:
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


def row_key(table: str, pk: dict[str, Any] | None) -> str:
    return table + "\x00" + json.dumps(pk, sort_keys=True, separators=(",", ":"))


@dataclass
class RowRule:
    """The per-row rule: apply a change only if its id beats the last one applied to that row."""

    last: dict[str, int] = field(default_factory=dict)
    truncated: dict[str, int] = field(default_factory=dict)

    def admit(self, change: Change) -> bool:
        table = f"{change.schema}.{change.table}"
        if change.id < self.truncated.get(table, 0):
            return False
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


def ws_url(url: str) -> str:
    base = url.rstrip("/")
    if base.startswith("http"):
        base = "ws" + base[4:]
    return base if base.endswith("/ws") else base + "/ws"


async def subscribe(
    url: str,
    table: str,
    *,
    where: dict[str, Any] | None = None,
    columns: list[str] | None = None,
    cursor: str | None = None,
    mode: str = "all",
    token: str | None = None,
    get_token: Callable[[], Awaitable[str]] | None = None,
    on_status: Callable[[str, str | None], None] | None = None,
    max_backoff: float = 5.0,
    rule: RowRule | None = None,
    session: aiohttp.ClientSession | None = None,
) -> AsyncIterator[Change]:
    """Yield every change of `table` (matching `where`) from `cursor` (or from now), forever.

    `on_status(state, cursor)` hears "live", "reconnecting" and each new cursor ("checkpoint").
    """
    rule = rule or RowRule()
    own_session = session is None
    http = session or aiohttp.ClientSession()
    delay = 0.1
    try:
        while True:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                async with http.ws_connect(ws_url(url), headers=headers, heartbeat=30) as ws:
                    frame: dict[str, Any] = {"type": "subscribe", "ref": "c", "table": table, "mode": mode}
                    if where is not None:
                        frame["where"] = where
                    if columns is not None:
                        frame["columns"] = columns
                    if cursor is not None:
                        frame["cursor"] = cursor
                    await ws.send_str(json.dumps(frame))
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        data = json.loads(msg.data)
                        kind = data.get("type")
                        if kind == "change":
                            change = Change.from_frame(data)
                            if rule.admit(change):
                                yield change
                        elif kind in ("checkpoint", "subscribed"):
                            cursor = data["cursor"]
                            if kind == "subscribed":
                                delay = 0.1
                                if on_status:
                                    on_status("live", cursor)
                            elif on_status:
                                on_status("checkpoint", cursor)
                        elif kind == "resync_required":
                            raise ResyncRequired(data.get("message") or data.get("reason", ""))
                        elif kind == "error":
                            if data.get("code") == "unavailable":
                                break
                            raise SubscriptionError(data.get("code", "error"), data.get("message", ""))
                    close_code = ws.close_code
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in (401, 403) and get_token is None:
                    raise SubscriptionError(
                        "unauthorized" if exc.status == 401 else "forbidden", exc.message
                    ) from None
                if exc.status in (401, 403) and get_token is not None:
                    token = await get_token()
                close_code = None
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.info("connection to %s failed: %s", url, exc)
                close_code = None
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
