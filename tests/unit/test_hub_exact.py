"""Exact values and undecodable changes through the hub, with events built from Postgres's JSON text."""

from __future__ import annotations

import json
from typing import Any

from rowcast.notifier.events import Event
from rowcast.notifier.filters import NUMERIC, STRING, Filter
from rowcast.notifier.hub import LIVE, Hub, Session, Subscription, encode_view
from rowcast.notifier.outbox import Outbox

from rowcast import jsonexact
from rowcast.auth import OPEN

BIG = "1234567890.123456789012345678901234567890"
HUGE = "9" * 400 + ".5"
DEEP = "[" * 1200 + "]" * 1200
COLUMNS = {"id": NUMERIC, "n": NUMERIC, "j": STRING}


def raw_event(id: int, row: str, *, op: str = "insert", old: str = "null") -> str:
    return (
        f'{{"id": {id}, "xid": "{100 + id}", "at": "2026-12-03T10:00:00+00:00", "schema": "public", '
        f'"table": "t", "op": "{op}", "pk": {{"id": {id}}}, "row": {row}, "old": {old}, '
        '"actor": {"user": "postgres", "app": "psql", "addr": null, "actor": null, "request_id": null}}'
    )


def from_log(id: int, row: str, **kw: Any) -> Event:
    """As the log readers build it: routing columns, the key's text, the whole event's text, `at`."""
    return Event.from_log_row(
        (
            id,
            str(100 + id),
            "public",
            "t",
            kw.get("op", "insert"),
            f'{{"id": {id}}}',
            raw_event(id, row, **kw),
            '"2026-12-03T10:00:00+00:00"',
        )
    )


def from_notify(id: int, row: str, **kw: Any) -> Event:
    """As the listener should build it: the routing fields from a parse that cannot fail on depth."""
    payload = raw_event(id, row, **kw)
    try:
        data = jsonexact.loads(payload)
    except jsonexact.TooDeep:
        data = jsonexact.shallow(payload)
    return Event.from_payload(data, raw=payload)


def from_notify_rounded(id: int, row: str, **kw: Any) -> Event:
    """As the listener builds it today: routing fields from its json.loads, which rounds numbers."""
    payload = raw_event(id, row, **kw)
    return Event.from_payload(json.loads(payload), raw=payload)


def subscriber(
    hub: Hub, ref: str, where: Any = None, columns: tuple[str, ...] | None = None, mode: str = "all"
) -> Session:
    session = Session(OPEN, Outbox(100, 1 << 20), lambda code, reason: None)
    hub.add_session(session)
    sub = Subscription(ref, session, "public.t", ("id",), Filter.compile(where, COLUMNS), columns, mode)
    sub.state = LIVE
    hub.register(sub)
    return session


def frames(session: Session) -> list[str]:
    return [f.data for f in session.outbox.frames if f.data is not None]


def test_regression_projected_views_keep_numbers_exact() -> None:
    """Was 1234567890.1234567 and a bare Infinity token (json.loads/json.dumps through float)."""
    for make in (from_log, from_notify, from_notify_rounded):
        event = make(1, f'{{"id": 1, "n": {BIG}, "m": {HUGE}, "tiny": 1e-400, "j": "x"}}')
        body = encode_view(event, "full", ("id", "n", "m", "tiny"))
        assert f'"n":{BIG}' in body and f'"m":{HUGE}' in body and '"tiny":1e-400' in body
        assert "Infinity" not in body
        parsed = jsonexact.loads(body)["row"]
        assert parsed == {
            "id": 1,
            "n": jsonexact.loads(BIG),
            "m": jsonexact.loads(HUGE),
            "tiny": jsonexact.loads("1e-400"),
        }


def test_filtered_views_keep_numbers_exact_and_compare_them_exactly() -> None:
    hub = Hub()
    session = subscriber(hub, "f", where={"n": {"gt": jsonexact.loads("0.1")}})
    hub.publish(from_log(1, '{"id": 1, "n": 0.1000000000000000000001}'))  # a float says 0.1
    hub.publish(from_notify_rounded(2, '{"id": 2, "n": 0.1}'))
    hub.publish(from_notify(3, f'{{"id": 3, "n": {HUGE}}}'))
    got = [jsonexact.loads(f) for f in frames(session)]
    assert [f["id"] for f in got] == [1, 3]
    assert str(got[0]["row"]["n"]) == "0.1000000000000000000001"
    assert '"n": ' + HUGE in frames(session)[1]  # a full view: Postgres's text verbatim


def test_regression_deep_jsonb_goes_verbatim_to_unfiltered_and_as_error_to_filtered() -> None:
    """A jsonb nested 1,200 deep raised RecursionError in the parse and killed the listener."""
    hub = Hub()
    plain = subscriber(hub, "plain")
    latest = subscriber(hub, "latest", mode="latest")
    filtered = subscriber(hub, "filtered", where={"id": {"gt": 0}})
    projected = subscriber(hub, "projected", columns=("n",))
    for make in (from_log, from_notify):
        deep = make(5, f'{{"id": 5, "n": 1.5, "j": {DEEP}}}', op="update", old='{"n": 2}')
        hub.publish(deep)
        hub.publish(make(6, '{"id": 6, "n": 2.5, "j": []}'))  # and the stream goes on
        assert not deep.decodable
        for session in (plain, latest):
            got = frames(session)
            assert len(got) == 2 and DEEP in got[0], "unfiltered: Postgres's text, verbatim"
            assert jsonexact.loads(got[1])["id"] == 6
        for session, ref in ((filtered, "filtered"), (projected, "projected")):
            error, after = (jsonexact.loads(f) for f in frames(session))
            assert error == {
                "type": "error",
                "error": "undecodable_change",
                "code": "undecodable_change",
                "ref": ref,
                "id": 5,
                "schema": "public",
                "table": "t",
                "op": "update",
                "message": error["message"],
            }
            assert "nested deeper than" in error["message"]
            assert after["type"] == "change" and after["id"] == 6
        for session in (plain, latest, filtered, projected):
            session.outbox.frames.clear()
    assert "?" in repr(from_notify(7, DEEP))  # a log line never parses nor fails


def test_long_poll_view_of_an_undecodable_change_is_a_marked_entry() -> None:
    session = Session(OPEN, Outbox(1, 1), lambda code, reason: None)
    sub = Subscription(
        "lp", session, "public.t", ("id",), Filter.compile({"id": {"gt": 0}}, COLUMNS), None, "all"
    )
    event = from_log(9, f'{{"id": 9, "j": {DEEP}}}')
    variant = sub.variant(event)
    assert variant is not None
    entry = jsonexact.loads(encode_view(event, variant, sub.columns))
    assert entry["id"] == 9 and "row" not in entry and entry["error"]["code"] == "undecodable_change"


def test_jsonexact_shallow_reads_the_routing_fields_of_a_too_deep_payload() -> None:
    payload = raw_event(5, f'{{"id": 5, "j": {DEEP}, "s": "]]"}}')
    data = jsonexact.shallow(payload)
    event = Event.from_payload(data, raw=payload)
    assert (event.id, event.xid, event.qualified, event.op) == (5, 105, "public.t", "insert")
    assert not event.decodable and event.raw == payload


def test_from_payload_uses_images_the_exact_codec_parsed() -> None:
    payload = raw_event(8, f'{{"id": 8, "n": {BIG}}}')
    event = Event.from_payload(jsonexact.loads(payload), raw=payload, exact=True)
    event.raw = "not parsed again"  # would be undecodable if it were
    assert str((event.row or {})["n"]) == BIG and event.pk == {"id": 8}
    assert encode_view(event, "full", None) == "not parsed again"  # raw still goes out verbatim
