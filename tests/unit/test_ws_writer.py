"""The WebSocket writer without a socket: when frames are written, and how many writes."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from rowcast.notifier import ws as ws_module
from rowcast.notifier.outbox import Frame, Outbox


class Transport:
    """What the writer writes to: each write() call's bytes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def client() -> tuple[Outbox, Transport]:
    outbox = Outbox(100, 1 << 20)
    session: Any = SimpleNamespace(outbox=outbox, closed=False, close=lambda code, reason: None)
    transport = Transport()
    writer = ws_module.Writer(None, session, SimpleNamespace(inc=lambda n: None), transport)  # type: ignore[arg-type]
    outbox.on_ready = writer.start
    return outbox, transport


def payloads(data: bytes) -> list[bytes]:
    """The payloads of the unmasked text frames in `data` (short frames only)."""
    out = []
    while data:
        assert data[0] == 0x81 and data[1] < 126
        out.append(data[2 : 2 + data[1]])
        data = data[2 + data[1] :]
    return out


async def test_frames_queued_in_one_burst_go_out_in_one_write_after_it() -> None:
    a, ta = client()
    b, tb = client()
    for n in range(3):
        a.put(Frame("change", f'{{"n":{n}}}'))
        b.put(Frame("change", f'{{"n":{n}}}'))
    assert ta.writes == tb.writes == []  # nothing yet: the burst may queue more
    await asyncio.sleep(0)
    assert [payloads(w) for w in ta.writes] == [[b'{"n":0}', b'{"n":1}', b'{"n":2}']]
    assert tb.writes == ta.writes


async def test_the_last_change_of_a_window_is_written_as_it_is_queued_with_the_rest_of_the_burst() -> None:
    a, ta = client()
    b, tb = client()
    a.put(Frame("change", '{"n":0}'))  # an earlier change of the window: deferred
    with ws_module.write_through():
        a.put(Frame("change", '{"n":1}'))
        assert [payloads(w) for w in ta.writes] == [[b'{"n":0}', b'{"n":1}']]  # one write, now
        assert tb.writes == []
        b.put(Frame("change", '{"n":1}'))
        assert [payloads(w) for w in tb.writes] == [[b'{"n":1}']]
    await asyncio.sleep(0)  # the burst's flush finds nothing left: no second, empty write
    assert len(ta.writes) == len(tb.writes) == 1
    b.put(Frame("checkpoint", '{"c":1}'))  # outside the block: deferred again
    assert len(tb.writes) == 1
    await asyncio.sleep(0)
    assert [payloads(w) for w in tb.writes][1] == [b'{"c":1}']
