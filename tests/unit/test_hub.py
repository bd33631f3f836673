"""The hub's checkpoint throttle: at most one per interval per client, and never the last lost."""

from __future__ import annotations

import asyncio
import json

from rowcast.notifier.filters import Filter
from rowcast.notifier.hub import LIVE, Hub, Session, Subscription
from rowcast.notifier.outbox import Outbox

from rowcast.auth import OPEN


def cursors(session: Session) -> list[str]:
    return [json.loads(f.data)["cursor"] for f in session.outbox.frames if f.data is not None]


async def test_checkpoints_are_throttled_but_the_newest_is_always_sent() -> None:
    hub = Hub(checkpoint_interval=0.2)
    session = Session(OPEN, Outbox(100, 1 << 20), lambda code, reason: None)
    hub.add_session(session)
    sub = Subscription("s", session, "public.books", ("id",), Filter(), None, "all")
    sub.state = LIVE
    hub.register(sub)
    hub.checkpoint("1:1:")
    assert cursors(session) == ["1:1:"]  # the first goes at once
    await session.outbox.get()  # the client reads it
    hub.checkpoint("2:2:")
    hub.checkpoint("3:3:")
    assert cursors(session) == []  # throttled
    await asyncio.sleep(0.3)
    # The middle one was superseded; the newest arrived on the trailing edge.
    assert cursors(session) == ["3:3:"]
    hub.close()


async def test_sessions_without_subscriptions_get_no_checkpoints() -> None:
    hub = Hub()
    session = Session(OPEN, Outbox(100, 1 << 20), lambda code, reason: None)
    hub.add_session(session)
    hub.checkpoint("1:1:")
    assert cursors(session) == []


def test_resync_all_tells_every_subscription_and_unregisters_it() -> None:
    """Regression: when the listener's own catch-up found its cursor pruned it only logged, so
    clients never learned of the gap."""
    hub = Hub()
    session = Session(OPEN, Outbox(100, 1 << 20), lambda code, reason: None)
    hub.add_session(session)
    for ref in ("a", "b"):
        sub = Subscription(ref, session, "public.books", ("id",), Filter(), None, "all")
        sub.state = LIVE
        hub.register(sub)
    hub.resync_all("cursor_expired", "pruned")
    frames = [json.loads(f.data) for f in session.outbox.frames if f.data is not None]
    assert {(f["type"], f["ref"], f["reason"]) for f in frames} == {
        ("resync_required", "a", "cursor_expired"),
        ("resync_required", "b", "cursor_expired"),
    }
    assert hub.subscription_count == 0 and session.subscriptions == {}


def test_a_view_judges_and_renders_without_any_session() -> None:
    """Long-poll renders through a View: scope first, then filter, then projection; no Session,
    no outbox, no close callback."""
    from rowcast.notifier.events import Event
    from rowcast.notifier.hub import View

    from rowcast.auth import Principal

    alice = Principal("alice", scopes={"public.books": {"owner": "alice"}})
    view = View("v", alice, "public.books", ("id",), Filter(), ("title",))
    assert not hasattr(view, "session")
    mine = Event(
        1,
        10,
        "2026-12-04T00:00:00Z",
        "public",
        "books",
        "insert",
        {"id": 1},
        {"id": 1, "owner": "alice", "title": "A"},
    )
    theirs = Event(
        2,
        11,
        "2026-12-04T00:00:00Z",
        "public",
        "books",
        "insert",
        {"id": 2},
        {"id": 2, "owner": "bob", "title": "B"},
    )
    assert view.variant(theirs) is None
    variant = view.variant(mine)
    assert variant == "full"
    frame = json.loads(view.render(mine, variant))
    assert frame["ref"] == "v" and frame["row"] == {"id": 1, "title": "A"}
