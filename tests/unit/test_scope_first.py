"""Finding 1, second half: a subscriber's filter must never run on rows outside its scope."""

from __future__ import annotations

from typing import Any

from rowcast.notifier.filters import Filter
from rowcast.notifier.hub import Session, Subscription
from rowcast.notifier.outbox import Outbox

from rowcast.auth import Principal


def test_filters_never_see_rows_outside_the_scope() -> None:
    seen: list[Any] = []

    def spy(row: Any) -> bool:
        seen.append(row.get("owner"))
        return True

    principal = Principal("alice", scopes={"public.books": {"owner": "alice"}})
    session = Session(principal, Outbox(10, 1 << 20), lambda code, reason: None)
    sub = Subscription("r", session, "public.books", ("id",), Filter((spy,), ("owner",)), None, "all")
    sub._visible({"id": 1, "owner": "bob"})
    sub._visible({"id": 2, "owner": "alice"})
    assert seen == ["alice"]
