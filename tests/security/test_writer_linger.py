"""Finding 13: a frame queued just as the WebSocket writer's linger ran out was stranded."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import Any

import pytest
from rowcast.notifier import ws as ws_module
from rowcast.notifier.app import create_app
from rowcast.notifier.outbox import Frame, Outbox

from tests.servers import serve, settings_for, wait_healthy, ws_connect


class Socket:
    """What the writer writes to: records frames and signals each one."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.arrived = asyncio.Event()

    async def send_str(self, data: str) -> None:
        self.sent.append(data)
        self.arrived.set()


async def test_a_frame_queued_while_the_linger_expires_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    # LINGER 0: the writer's timeout fires on the loop's next turn, so the order of events is
    # exact: the writer waits, the test queues a frame (waking it), then the timeout cancels it.
    monkeypatch.setattr(ws_module, "LINGER", 0)
    outbox = Outbox(100, 1 << 20)
    session: Any = SimpleNamespace(outbox=outbox, closed=False, close=lambda code, reason: None)
    socket = Socket()
    writer = ws_module.Writer(socket, session, SimpleNamespace(inc=lambda n: None))  # type: ignore[arg-type]
    outbox.on_ready = writer.start
    outbox.put(Frame("pong", '{"type":"pong"}'))
    await asyncio.sleep(0)  # the writer sends the first frame and starts waiting, linger 0
    assert socket.sent == ['{"type":"pong"}']
    outbox.put(Frame("pong", '{"type":"pong","n":2}'))  # before the timeout callback runs
    async with asyncio.timeout(2):
        while len(socket.sent) < 2:
            socket.arrived.clear()
            await socket.arrived.wait()
    assert socket.sent[1] == '{"type":"pong","n":2}'
    await asyncio.gather(*writer.tasks)


async def test_pings_at_the_linger_boundary_always_get_their_pong(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    linger = 0.05
    monkeypatch.setattr(ws_module, "LINGER", linger)
    rng = random.Random(13)
    async with serve(create_app(settings_for(db_url, max_client_rate=1000))) as base:
        await wait_healthy(base)
        async with ws_connect(base) as client:  # no subscriptions: nothing else would wake a writer
            for _ in range(60):
                await client.send(type="ping")
                assert (await client.recv(timeout=2))["type"] == "pong"
                await asyncio.sleep(linger + rng.uniform(-0.004, 0.004))
