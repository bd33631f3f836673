"""The benchmark's deterministic parts: the Engine.IO/Socket.IO codec and the honest-harness rules.

bench/ needs no Postgres and no psutil for these, so they run with the unit tests; the rest of
the harness is exercised by `python -m bench.fanout --quick`.
"""

from __future__ import annotations

import argparse

import pytest

from bench import eio, harness


def test_packets_from_the_server_are_told_apart() -> None:
    opened = '0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'
    assert eio.kind(opened) == eio.OPEN
    assert eio.data(opened)["pingInterval"] == 25000
    assert eio.kind("2") == eio.PING
    assert eio.kind('40{"sid":"xyz"}') == eio.CONNECTED
    assert eio.data('40{"sid":"xyz"}') == {"sid": "xyz"}
    assert eio.kind('44{"message":"not authorized"}') == eio.REFUSED
    assert eio.kind("41") == eio.CLOSE
    assert eio.kind("1") == eio.CLOSE
    assert eio.kind("6") == eio.OTHER
    assert eio.kind("43[]") == eio.OTHER


def test_an_event_round_trips_and_keeps_the_stamp_findable() -> None:
    row = {"id": 1, "pad": "x", "sent": 1764780000.25}
    packet = eio.event("change", row)
    assert packet == '42["change",{"id":1,"pad":"x","sent":1764780000.25}]'
    assert eio.kind(packet) == eio.EVENT
    assert eio.data(packet) == ["change", row]
    # The load generator's hot path: the stamp by string search, up to the row's closing brace.
    i = packet.find('"sent":')
    assert float(packet[i + 7 : packet.find("}", i)]) == 1764780000.25


def test_what_the_client_sends() -> None:
    assert eio.CONNECT == "40"
    assert eio.PONG == "3"
    assert eio.PATH == "/socket.io/?EIO=4&transport=websocket"


@pytest.mark.parametrize(
    ("clients", "rate", "procs"),
    [
        (1, 10, 1),
        (100, 10, 1),  # 1,000 frames/s
        (100, 1000, 3),  # 100,000 frames/s
        (500, 10, 1),
        (501, 10, 2),  # clients decide
        (1000, 100, 3),  # 100,000 frames/s decide
        (5000, 10, 10),
        (5000, 1000, harness.MAX_LOADGENS),
    ],
)
def test_loadgen_processes_follow_clients_and_frames(clients: int, rate: float, procs: int) -> None:
    assert harness.loadgen_procs(clients, rate) == procs


def test_a_point_is_invalid_when_any_loadgen_passes_the_limit() -> None:
    assert harness.validity([]) == "yes"
    assert harness.validity([12, 80]) == "yes"
    assert harness.validity([12, 81]) == "no: loadgen 81%"
    assert harness.validity([93, 40]) == "no: loadgen 93%"
    assert harness.validity([50], limit=40) == "no: loadgen 50%"


def test_an_invalid_point_never_counts_as_held() -> None:
    assert harness.quotable({"ok": True, "valid": "yes"})
    assert not harness.quotable({"ok": True, "valid": "no: loadgen 91%"})
    assert not harness.quotable({"ok": False, "valid": "yes"})
    assert harness.quotable({"ok": True})  # results written before the rule


def test_servers_option() -> None:
    assert harness.servers_arg("rowcast,floor,socketio") == ["rowcast", "floor", "socketio"]
    assert harness.servers_arg(" socketio , rowcast,socketio") == ["socketio", "rowcast"]
    for bad in ("", "rowcast,postgraphile", ","):
        with pytest.raises(argparse.ArgumentTypeError):
            harness.servers_arg(bad)


def test_workers_series_are_compared_with_one_process() -> None:
    from bench.fanout import rowcast_label, versus_one_process

    def point(label: str, msgs: float, ok: bool = True) -> dict[str, object]:
        return {"server": label, "clients": 100, "msgs_per_s": msgs, "ok": ok, "valid": "yes"}

    one, two = rowcast_label("notify", 1), rowcast_label("notify", 2)
    assert (one, two) == ("rowcast (notify)", "rowcast (notify, 2 workers)")
    lines = versus_one_process([point(one, 1000), point(two, 1800), point(two, 5000, ok=False)], ["notify"])
    assert lines[-1] == "- 100 clients: 1 process 1,000, 2 workers 1,800 (1.80x)"
    assert versus_one_process([point(one, 1000)], ["notify"]) == []
