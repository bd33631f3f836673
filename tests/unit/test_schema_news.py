"""DDL log rows in the hub (notifier/schema.py), without a database: what each subscriber is told.

The end-to-end versions, with real DDL on a real Postgres, are in
tests/integration/test_schema_changes.py.
"""

from __future__ import annotations

import json
from typing import Any

from rowcast.notifier.events import Event
from rowcast.notifier.filters import Filter
from rowcast.notifier.hub import LIVE, Hub, Session, Subscription
from rowcast.notifier.outbox import Outbox
from rowcast.notifier.schema import TableChange

from rowcast.auth import OPEN, Principal

BOOKS = {"id": "N", "title": "S", "owner": "S"}
TYPES = {"N": "integer", "S": "text"}


def ddl(
    op: str, columns: dict[str, str], *, table: str = "books", renamed_from: str | None = None, xid: int = 9
) -> Event:
    row = {
        "columns": [{"name": n, "type": TYPES[c], "category": c} for n, c in columns.items()],
        "pk": ["id"] if "id" in columns else [],
        "renamed_from": {"schema": "public", "table": renamed_from} if renamed_from else None,
    }
    return Event(100 + xid, xid, "2026-12-03T00:00:00+00:00", "public", table, op, None, row, None, {}, None)


def change(table: str = "books", xid: int = 10, **row: Any) -> Event:
    image = {"id": 1, "title": "t", "owner": "alice", **row}
    return Event(
        200 + xid,
        xid,
        "2026-12-03T00:00:00+00:00",
        "public",
        table,
        "insert",
        {"id": 1},
        image,
        None,
        {},
        None,
    )


class World:
    def __init__(self) -> None:
        self.hub = Hub()
        self.changes: list[TableChange] = []
        self.hub.on_table_change.append(self.changes.append)

    def subscribe(
        self,
        ref: str,
        *,
        where: Any = None,
        columns: tuple[str, ...] | None = None,
        principal: Principal = OPEN,
    ) -> Session:
        session = Session(
            principal, Outbox(100, 1 << 20), lambda code, reason: None, on_end=self.hub.unregister
        )
        self.hub.add_session(session)
        sub = Subscription(
            ref, session, "public.books", ("id",), Filter.compile(where, BOOKS), columns, "all"
        )
        sub.state = LIVE
        self.hub.register(sub)
        return session


def frames(session: Session) -> list[dict[str, Any]]:
    return [json.loads(f.data) for f in session.outbox.frames if f.data is not None]


def test_add_column_tells_subscribers_and_the_catalog() -> None:
    world = World()
    session = world.subscribe("s")
    world.hub.publish(ddl("schema", {**BOOKS, "isbn": "S"}))
    [frame] = frames(session)
    assert frame["type"] == "schema_changed" and frame["ref"] == "s"
    assert [c["name"] for c in frame["columns"]] == ["id", "title", "owner", "isbn"]
    assert frame["pk"] == ["id"] and frame["renamed_from"] is None
    assert "actor" not in frame  # who ran the DDL is not row data a scoped reader may see
    assert world.changes[0].columns["isbn"] == "S"


def test_a_filter_on_a_dropped_column_becomes_an_error_and_the_subscription_ends() -> None:
    world = World()
    filtered = world.subscribe("f", where={"title": {"eq": "x"}})
    projected = world.subscribe("p", columns=("owner",))
    plain = world.subscribe("n")
    without_title = {"id": "N", "owner": "S"}
    world.hub.publish(ddl("schema", without_title))
    assert [(f["type"], f.get("code")) for f in frames(filtered)] == [("error", "unknown_column")]
    assert [f["type"] for f in frames(projected)] == ["schema_changed"]  # owner is still there
    assert [f["type"] for f in frames(plain)] == ["schema_changed"]
    assert set(world.hub.by_table["public.books"]) == {projected.subscriptions["p"], plain.subscriptions["n"]}
    assert "f" not in filtered.subscriptions  # its ref is free again
    world.hub.publish(change(title=None))
    assert frames(filtered)[-1]["type"] == "error"  # nothing more for the ended one


def test_a_type_change_under_a_filter_ends_it_too() -> None:
    world = World()
    session = world.subscribe("f", where={"owner": {"eq": "alice"}})
    world.hub.publish(ddl("schema", {**BOOKS, "owner": "N"}))
    assert frames(session)[0]["code"] == "unknown_column"


def test_a_renamed_table_is_followed_by_identity() -> None:
    world = World()
    session = world.subscribe("s")
    world.hub.publish(ddl("schema", BOOKS, table="novels", renamed_from="books"))
    assert "public.books" not in world.hub.by_table
    [sub] = world.hub.by_table["public.novels"]
    assert sub.table == "public.novels"
    world.hub.publish(change(table="novels"))
    kinds = [(f["type"], f.get("table"), f.get("renamed_from")) for f in frames(session)]
    assert kinds == [
        ("schema_changed", "novels", {"schema": "public", "table": "books"}),
        ("change", "novels", None),
    ]


def test_a_rename_never_carries_a_scoped_subscription_out_of_its_scope() -> None:
    """Scopes are keyed by table name: following the rename would widen it to every row."""
    scoped = Principal(sub="alice", scopes={"public.books": {"owner": "alice"}})
    world = World()
    session = world.subscribe("s", principal=scoped)
    world.hub.publish(ddl("schema", BOOKS, table="novels", renamed_from="books"))
    [frame] = frames(session)
    assert (frame["type"], frame["code"]) == ("error", "forbidden")
    assert world.hub.subscription_count == 0
    limited = Principal(sub="bob", read=frozenset({"public.books"}))
    other = World()
    session = other.subscribe("s", principal=limited)
    other.hub.publish(ddl("schema", BOOKS, table="novels", renamed_from="books"))
    assert frames(session)[0]["code"] == "forbidden"


def test_a_dropped_table_asks_for_a_resync_and_ends_the_subscription() -> None:
    world = World()
    session = world.subscribe("s")
    world.hub.publish(ddl("drop", {}))
    [frame] = frames(session)
    assert (frame["type"], frame["reason"]) == ("resync_required", "table_dropped")
    assert world.hub.subscription_count == 0 and not session.subscriptions
    assert world.changes[0].dropped


def test_a_malformed_ddl_row_is_logged_and_skipped(caplog: Any) -> None:
    world = World()
    session = world.subscribe("s")
    bad = Event(
        1, 1, "2026-12-03T00:00:00+00:00", "public", "books", "schema", None, {"cols": 1}, None, {}, None
    )
    world.hub.publish(bad)
    world.hub.publish(change())
    assert [f["type"] for f in frames(session)] == ["change"]
    assert "malformed" in caplog.text
