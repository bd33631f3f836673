"""Presence over real sockets on a real Postgres (issue 18): who views or edits which row.

In-process notifiers for the protocol, scope and limits; two `rowcast notifier` processes on one
database for presence across replicas, and a killed one for expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import psycopg
import pytest
from rowcast.notifier.app import create_app

from rowcast.auth import issue_token
from tests.servers import WsClient, rowcast_server, serve, settings_for, wait_healthy, ws_connect

AConn = psycopg.AsyncConnection[tuple[Any, ...]]
SECRET = "presence-secret-" + "k" * 32


def is_presence(frame: dict[str, Any]) -> bool:
    return frame["type"] == "presence"


# A presence frame is a state, and the same state may come twice: the snapshot a subscription gets
# as it goes live (Presence.welcome) can cross the live announcement of the same row. Tests that
# wait for a change of state wait for that state, not for the next presence frame.
def withdrawn(frame: dict[str, Any]) -> bool:
    return is_presence(frame) and frame["state"] is None


def announced(frame: dict[str, Any]) -> bool:
    return is_presence(frame) and frame["state"] is not None


async def add_book(conn: AConn, title: str, owner: str | None = None) -> int:
    cur = await conn.execute("INSERT INTO books (title, owner) VALUES (%s, %s) RETURNING id", (title, owner))
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def quiet(client: WsClient, seconds: float) -> list[dict[str, Any]]:
    """Every presence frame that arrives within `seconds` (none expected, usually)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = await client.recv(left)
        except TimeoutError:
            break
        if is_presence(frame):
            got.append(frame)
    return got


@pytest.fixture
async def notifier(db_url: str) -> AsyncIterator[str]:
    async with serve(create_app(settings_for(db_url, max_presence_rows=3))) as base:
        await wait_healthy(base)
        yield base


@pytest.fixture
async def token_notifier(db_url: str) -> AsyncIterator[str]:
    async with serve(create_app(settings_for(db_url, auth="token", jwt_secret=SECRET))) as base:
        await wait_healthy(base)
        yield base


async def test_presence_reaches_another_socket_and_goes_when_it_closes(notifier: str, aconn: AConn) -> None:
    book = await add_book(aconn, "Dune")
    async with ws_connect(notifier) as viewer:
        await viewer.subscribe("v")
        async with ws_connect(notifier) as editor:
            await editor.subscribe("e")
            started = time.monotonic()
            await editor.send(
                type="presence", ref="e", pk={"id": book}, state="editing", name="Ann\n\x00 Lee"
            )
            seen = await viewer.until(is_presence, timeout=1.0)
            assert time.monotonic() - started < 1.0
            assert seen["ref"] == "v" and seen["pk"] == {"id": book} and seen["state"] == "editing"
            assert seen["who"] == "Ann Lee" and seen["schema"] == "public" and seen["table"] == "books"
            assert isinstance(seen["session"], str) and seen["since"]
            assert await quiet(editor, 0.8) == [], "a socket is never told of its own presence"
        started = time.monotonic()
        gone = await viewer.until(withdrawn, timeout=5.0)
    assert gone["state"] is None and gone["session"] == seen["session"] and gone["pk"] == {"id": book}
    assert time.monotonic() - started < 2.0


async def test_a_new_subscription_gets_the_presence_already_there(notifier: str, aconn: AConn) -> None:
    book = await add_book(aconn, "Emma")
    async with ws_connect(notifier) as editor, ws_connect(notifier) as late:
        await editor.subscribe("e")
        await editor.send(type="presence", ref="e", pk={"id": book}, state="viewing", name="Bo")
        await asyncio.sleep(0.8)
        assert (await late.subscribe("l"))["type"] == "subscribed"
        seen = await late.until(is_presence, timeout=2.0)
        assert (seen["ref"], seen["who"], seen["state"]) == ("l", "Bo", "viewing")
        await editor.send(type="presence", ref="e", pk={"id": book}, state=None)
        gone = await late.until(withdrawn, timeout=2.0)
    assert gone["state"] is None


async def test_limits_and_bad_frames_answer_with_presence_errors(notifier: str) -> None:
    async with ws_connect(notifier) as client:
        await client.subscribe("s")
        for key in (1, 2, 3):
            await client.send(type="presence", ref="s", pk={"id": key}, state="viewing")
        await client.send(type="presence", ref="s", pk={"id": 4}, state="viewing")
        error = await client.until(lambda f: f["type"] == "error", timeout=2.0)
        assert (error["code"], error["about"], error["ref"]) == ("too_many_presence_rows", "presence", "s")
        # Withdrawing one frees its place; changing the state of an announced row is no new row.
        await client.send(type="presence", ref="s", pk={"id": 1}, state=None)
        await client.send(type="presence", ref="s", pk={"id": 2}, state="editing")
        await client.send(type="presence", ref="s", pk={"id": 4}, state="viewing")
        for frame in (
            {"ref": "s", "pk": {"nope": 1}, "state": "viewing"},
            {"ref": "s", "pk": {"id": 1}, "state": "typing"},
            {"ref": "s", "pk": {"id": [1]}, "state": "viewing"},
        ):
            await client.send(type="presence", **frame)
            error = await client.until(lambda f: f["type"] == "error", timeout=2.0)
            assert (error["code"], error["about"]) == ("bad_frame", "presence"), frame
        await client.send(type="presence", ref="zz", pk={"id": 1}, state="viewing")
        error = await client.until(lambda f: f["type"] == "error", timeout=2.0)
        assert error["code"] == "unknown_ref"
        # The subscription went on through all of it.
        await client.send(type="ping")
        assert (await client.until(lambda f: f["type"] in ("pong", "error"), timeout=2.0))["type"] == "pong"


async def test_presence_is_neither_notified_nor_logged(notifier: str, aconn: AConn, db_url: str) -> None:
    """Presence never rides the public NOTIFY channel and never enters the change log."""
    book = await add_book(aconn, "Kim")
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as listener:
        await listener.execute("LISTEN rowcast")
        before = await (await aconn.execute("SELECT count(*) FROM rowcast.changes")).fetchone()
        async with ws_connect(notifier) as viewer, ws_connect(notifier) as editor:
            await viewer.subscribe("v")
            await editor.subscribe("e")
            await editor.send(type="presence", ref="e", pk={"id": book}, state="editing")
            await viewer.until(is_presence, timeout=2.0)
        heard = []
        async for note in listener.notifies(timeout=0.5):
            heard.append(note)
        after = await (await aconn.execute("SELECT count(*) FROM rowcast.changes")).fetchone()
    assert heard == [] and before == after


def scoped(sub: str, owner: str) -> str:
    return issue_token(SECRET, sub, read=["books"], write=["books"], scopes=[f"books.owner={owner}"])


async def test_a_token_scoped_to_alice_sees_no_presence_on_bobs_rows(
    token_notifier: str, aconn: AConn
) -> None:
    alices = await add_book(aconn, "Alice's", owner="alice")
    bobs = await add_book(aconn, "Bob's", owner="bob")
    editor_token = issue_token(SECRET, "carol", read=["books"])  # unscoped: sees both rows
    alice_token = scoped("alice", "alice")
    async with (
        ws_connect(token_notifier, headers={"Authorization": f"Bearer {alice_token}"}) as alice,
        ws_connect(token_notifier, headers={"Authorization": f"Bearer {editor_token}"}) as carol,
    ):
        assert (await alice.subscribe("a"))["type"] == "subscribed"
        assert (await carol.subscribe("c"))["type"] == "subscribed"
        await carol.send(type="presence", ref="c", pk={"id": bobs}, state="editing", name="mallory")
        await carol.send(type="presence", ref="c", pk={"id": alices}, state="viewing", name="mallory")
        seen = await alice.until(is_presence, timeout=2.0)
        # Only alice's row, under the token's subject, never the name the client sent.
        assert (seen["pk"], seen["who"], seen["state"]) == ({"id": alices}, "carol", "viewing")
        assert await quiet(alice, 1.2) == []
        # Alice may not announce a row outside her scope either.
        await alice.send(type="presence", ref="a", pk={"id": bobs}, state="viewing")
        error = await alice.until(lambda f: f["type"] == "error", timeout=2.0)
        assert (error["code"], error["about"]) == ("forbidden", "presence")
        # A row of hers that the log has never seen (no image) is outside too: fail closed.
        await alice.send(type="presence", ref="a", pk={"id": 999_999}, state="viewing")
        error = await alice.until(lambda f: f["type"] == "error", timeout=2.0)
        assert error["code"] == "forbidden"
        await carol.send(type="presence", ref="c", pk={"id": bobs}, state=None)
        assert await quiet(alice, 1.0) == [], "not even the withdrawal of presence on bob's row"


async def test_presence_crosses_two_notifier_processes_and_expires_when_one_dies(
    db_url: str, aconn: AConn
) -> None:
    book = await add_book(aconn, "Ubik")
    env = {"ROWCAST_AUTH": "open"}
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(rowcast_server("notifier", db_url, env))
        second = await stack.enter_async_context(rowcast_server("notifier", db_url, env))
        viewer = await stack.enter_async_context(ws_connect(second.base))
        await viewer.subscribe("v")
        async with ws_connect(first.base) as editor:
            await editor.subscribe("e")
            await editor.send(type="presence", ref="e", pk={"id": book}, state="editing", name="Ann")
            seen = await viewer.until(is_presence, timeout=2.0)
            assert (seen["who"], seen["state"]) == ("Ann", "editing")
        gone = await viewer.until(withdrawn, timeout=3.0)
        assert gone["state"] is None, "a closed socket's presence goes at once, across processes"

        # A notifier that dies cleans nothing up: its presence expires.
        editor = await stack.enter_async_context(ws_connect(first.base))
        await editor.subscribe("e")
        await editor.send(type="presence", ref="e", pk={"id": book}, state="viewing", name="Ann")
        await viewer.until(lambda f: is_presence(f) and f["state"] == "viewing", timeout=2.0)
        first.process.kill()
        started = time.monotonic()
        gone = await viewer.until(withdrawn, timeout=8.0)
    assert gone["state"] is None and time.monotonic() - started < 5.0


async def test_the_python_client_announces_and_hears_presence(notifier: str, aconn: AConn) -> None:
    from rowcast.client import Presence, subscribe

    book = await add_book(aconn, "Solaris")
    heard: list[list[Any]] = []
    presence = Presence(name="Py", on_change=heard.append)
    await presence.announce({"id": book}, "editing")  # before connecting: sent once subscribed
    statuses: list[str] = []

    async def consume() -> None:
        async for _ in subscribe(
            notifier, "books", presence=presence, on_status=lambda s, c: statuses.append(s)
        ):
            pass

    task = asyncio.create_task(consume())
    try:
        async with ws_connect(notifier) as other:
            await other.subscribe("o")
            seen = await other.until(is_presence, timeout=3.0)
            assert (seen["who"], seen["state"], seen["pk"]) == ("Py", "editing", {"id": book})
            await other.send(type="presence", ref="o", pk={"id": book}, state="viewing", name="Raw")
            async with asyncio.timeout(2.0):
                while not presence.others({"id": book}):
                    await asyncio.sleep(0.02)
            (entry,) = presence.others({"id": book})
            assert (entry.who, entry.state) == ("Raw", "viewing") and heard
            await presence.announce({"id": book}, None)
            gone = await other.until(withdrawn, timeout=2.0)
            assert gone["state"] is None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert "live" in statuses


async def test_presence_follows_a_row_out_of_and_back_into_a_scoped_view(
    token_notifier: str, aconn: AConn
) -> None:
    book = await add_book(aconn, "Moving", owner="alice")
    alice_token = scoped("alice", "alice")
    carol_token = issue_token(SECRET, "carol", read=["books"])
    async with (
        ws_connect(token_notifier, headers={"Authorization": f"Bearer {alice_token}"}) as alice,
        ws_connect(token_notifier, headers={"Authorization": f"Bearer {carol_token}"}) as carol,
    ):
        await alice.subscribe("a")
        await carol.subscribe("c")
        await carol.send(type="presence", ref="c", pk={"id": book}, state="editing")
        assert (await alice.until(is_presence, timeout=2.0))["state"] == "editing"
        await aconn.execute("UPDATE books SET owner = 'bob' WHERE id = %s", (book,))
        gone = await alice.until(withdrawn, timeout=2.0)
        assert gone["state"] is None and gone["pk"] == {"id": book}
        await aconn.execute("UPDATE books SET owner = 'alice' WHERE id = %s", (book,))
        back = await alice.until(announced, timeout=2.0)
        assert (back["state"], back["who"]) == ("editing", "carol")


# A raw WebSocket client in a process of its own, so that it can be frozen (SIGSTOP): its socket
# stays open (no FIN, no close frame), it just stops reading and answering pings.
ANNOUNCER = """
import asyncio, json, sys
import aiohttp

async def main(url, book):
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(json.dumps({"type": "subscribe", "ref": "e", "table": "books"}))
        async for msg in ws:
            if json.loads(msg.data).get("type") == "subscribed":
                break
        await ws.send_str(json.dumps(
            {"type": "presence", "ref": "e", "pk": {"id": book}, "state": "editing", "name": "Frozen"}
        ))
        print("announced", flush=True)
        async for msg in ws:  # reads (and so answers pings) until frozen
            pass

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def announcer(base: str, book: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", ANNOUNCER, base.replace("http", "ws", 1) + "/ws", str(book)],
        stdout=subprocess.PIPE,
        text=True,
    )


async def test_a_silently_dropped_announcers_presence_goes_within_seconds(
    notifier: str, aconn: AConn
) -> None:
    """Gap 1 of issue 18: a connection that drops without closing (here: the client process is
    frozen, so its socket stays open) loses its presence within 5 s, not when the 15 s WebSocket
    heartbeat notices; while it answers it keeps its presence however idle, and it gets it back
    when it answers again."""
    book = await add_book(aconn, "Frozen")
    async with ws_connect(notifier) as viewer:
        await viewer.subscribe("v")
        child = announcer(notifier, book)
        try:
            assert child.stdout is not None
            assert (await asyncio.to_thread(child.stdout.readline)).strip() == "announced"
            seen = await viewer.until(is_presence, timeout=3.0)
            assert (seen["who"], seen["state"]) == ("Frozen", "editing")
            # Idle but alive (it answers the notifier's pings): its presence stays.
            assert await quiet(viewer, 4.5) == []
            os.kill(child.pid, signal.SIGSTOP)
            started = time.monotonic()
            gone = await viewer.until(withdrawn, timeout=8.0)
            elapsed = time.monotonic() - started
            assert gone["state"] is None and gone["session"] == seen["session"]
            assert elapsed < 5.0, f"presence of a silent connection went after {elapsed:.1f}s"
            # It wakes up (the socket was never closed): its presence comes back.
            os.kill(child.pid, signal.SIGCONT)
            back = await viewer.until(announced, timeout=5.0)
            assert (back["session"], back["state"], back["pk"]) == (seen["session"], "editing", {"id": book})
        finally:
            child.kill()
            child.wait(10)
            if child.stdout is not None:
                child.stdout.close()


async def test_presence_of_a_frozen_notifier_expires_on_the_other(db_url: str, aconn: AConn) -> None:
    """A notifier that stops (SIGSTOP: no crash, no close, its sockets stay open) stops renewing
    its presence lease: viewers on another notifier see it go within 5 s."""
    book = await add_book(aconn, "Ice")
    env = {"ROWCAST_AUTH": "open"}
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(rowcast_server("notifier", db_url, env))
        second = await stack.enter_async_context(rowcast_server("notifier", db_url, env))
        viewer = await stack.enter_async_context(ws_connect(second.base))
        await viewer.subscribe("v")
        editor = await stack.enter_async_context(ws_connect(first.base))
        await editor.subscribe("e")
        await editor.send(type="presence", ref="e", pk={"id": book}, state="viewing", name="Ann")
        await viewer.until(lambda f: is_presence(f) and f["state"] == "viewing", timeout=2.0)
        assert first.process.proc is not None
        first.process.proc.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            gone = await viewer.until(withdrawn, timeout=8.0)
            elapsed = time.monotonic() - started
        finally:
            first.process.proc.send_signal(signal.SIGCONT)
        assert gone["state"] is None and elapsed < 5.0, elapsed
        # Thawed, it renews its sessions' presence: back for the viewer.
        back = await viewer.until(announced, timeout=5.0)
        assert (back["who"], back["state"]) == ("Ann", "viewing")


async def test_presence_follows_a_row_whose_key_changes(db_url: str, aconn: AConn) -> None:
    """Gap 2 of issue 18: UPDATE books SET id = 30 WHERE id = 3 while someone edits row 3: viewers
    (here on another notifier process) see the presence move to the new key, `since` kept, and the
    old key's presence go; the announcer withdrawing the old key (before it has caught up) withdraws
    the moved one."""
    book = await add_book(aconn, "Rekeyed")
    new_id = book + 100_000
    env = {"ROWCAST_AUTH": "open"}
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(rowcast_server("notifier", db_url, env))
        second = await stack.enter_async_context(rowcast_server("notifier", db_url, env))
        viewer = await stack.enter_async_context(ws_connect(second.base))
        await viewer.subscribe("v")
        editor = await stack.enter_async_context(ws_connect(first.base))
        await editor.subscribe("e")
        await editor.send(type="presence", ref="e", pk={"id": book}, state="editing", name="Ann")
        seen = await viewer.until(is_presence, timeout=2.0)
        await aconn.execute("UPDATE books SET id = %s WHERE id = %s", (new_id, book))
        frames: dict[int, dict[str, Any]] = {}
        started = time.monotonic()
        async with asyncio.timeout(5.0):
            while len(frames) < 2:
                frame = await viewer.until(is_presence)
                frames[frame["pk"]["id"]] = frame
        elapsed = time.monotonic() - started
        assert frames[book]["state"] is None and frames[book]["session"] == seen["session"]
        moved = frames[new_id]
        assert (moved["state"], moved["who"], moved["session"]) == ("editing", "Ann", seen["session"])
        assert moved["since"] == seen["since"], "the same presence, moved: since is kept"
        assert elapsed < 2.0
        assert await quiet(viewer, 1.0) == []
        # The announcer still names the old key: that withdraws the presence where it is now.
        await editor.send(type="presence", ref="e", pk={"id": book}, state=None)
        gone = await viewer.until(withdrawn, timeout=2.0)
        assert (gone["pk"], gone["state"]) == ({"id": new_id}, None)
        # Moved again; then a new row takes the old key: announcing that key names the new row
        # (no longer an alias of the moved one).
        await editor.send(type="presence", ref="e", pk={"id": new_id}, state="editing", name="Ann")
        await viewer.until(is_presence, timeout=2.0)
        await aconn.execute("UPDATE books SET id = %s WHERE id = %s", (new_id + 1, new_id))
        await editor.until(lambda f: f["type"] == "change" and f["pk"] == {"id": new_id + 1})
        await aconn.execute("INSERT INTO books (id, title) VALUES (%s, 'Reused')", (new_id,))
        await editor.until(lambda f: f["type"] == "change" and f["op"] == "insert" and f["pk"] == {"id": new_id})
        await editor.send(type="presence", ref="e", pk={"id": new_id}, state="viewing", name="Ann")
        again = await viewer.until(lambda f: is_presence(f) and f["state"] == "viewing", timeout=2.0)
        assert (again["pk"], again["state"]) == ({"id": new_id}, "viewing")


async def test_the_python_client_follows_its_presence_to_a_rows_new_key(notifier: str, aconn: AConn) -> None:
    from rowcast.client import Presence, subscribe

    book = await add_book(aconn, "Rekeyed by Py")
    new_id = book + 200_000
    presence = Presence(name="Py")
    await presence.announce({"id": book}, "editing")

    async def consume() -> None:
        async for _ in subscribe(notifier, "books", presence=presence):
            pass

    task = asyncio.create_task(consume())
    try:
        async with ws_connect(notifier) as other:
            await other.subscribe("o")
            seen = await other.until(is_presence, timeout=3.0)
            assert seen["pk"] == {"id": book}
            await aconn.execute("UPDATE books SET id = %s WHERE id = %s", (new_id, book))
            moved = await other.until(lambda f: is_presence(f) and f["state"] is not None, timeout=3.0)
            assert (moved["pk"], moved["who"], moved["since"]) == ({"id": new_id}, "Py", seen["since"])
            async with asyncio.timeout(3.0):
                while list(presence.mine) != [f'{{"id":{new_id}}}']:
                    await asyncio.sleep(0.02)
            # Code that still names the old key means the row: the client withdraws the new key.
            await presence.announce({"id": book}, None)
            assert presence.mine == {} and presence.moved == {}
            gone = await other.until(withdrawn, timeout=2.0)
            assert (gone["pk"], gone["state"]) == ({"id": new_id}, None)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_only_sockets_holding_presence_are_pinged_and_client_pings_are_answered(
    notifier: str, aconn: AConn
) -> None:
    """The silence check pings a socket only while it holds presence (after a third of
    ROWCAST_PRESENCE_TIMEOUT of silence); an idle socket without presence hears only the 15 s
    heartbeat. The notifier handles pings itself now (autoping off): a client's ping is answered."""
    import aiohttp

    book = await add_book(aconn, "Pinged")

    async def control_frames(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[aiohttp.WSMsgType]:
        got = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    msg = await ws.receive()
                    if msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                        got.append(msg.type)
                        if msg.type == aiohttp.WSMsgType.PING:
                            await ws.pong(msg.data)
                    elif msg.type != aiohttp.WSMsgType.TEXT:
                        raise ConnectionError(msg)
        return got

    url = notifier.replace("http", "ws", 1) + "/ws"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, autoping=False) as ws:
        await ws.ping(b"hi")
        assert await control_frames(ws, 0.5) == [aiohttp.WSMsgType.PONG]
        await ws.send_json({"type": "subscribe", "ref": "s", "table": "books"})
        assert await control_frames(ws, 2.5) == [], "no presence: no ping"
        await ws.send_json({"type": "presence", "ref": "s", "pk": {"id": book}, "state": "viewing"})
        pings = await control_frames(ws, 3.5)
        assert 2 <= len(pings) <= 4 and set(pings) == {aiohttp.WSMsgType.PING}, pings
        await ws.send_json({"type": "presence", "ref": "s", "pk": {"id": book}, "state": None})
        await control_frames(ws, 1.0)  # a ping already on its way may still come
        assert await control_frames(ws, 2.5) == [], "presence withdrawn: pings stop"


class BlackHole:
    """A TCP proxy that can stop forwarding without closing anything: a network path that drops
    every packet (no FIN, no RST ever arrives at either end)."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self.tasks.add(task)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                await self.flowing.wait()  # dropped path: hold everything, close nothing
                dst.write(data)
                await dst.drain()
        dst.close()


async def test_presence_goes_when_the_network_path_black_holes(notifier: str, aconn: AConn) -> None:
    """Gap 1, the other way a connection drops silently: the path stops carrying packets and
    neither end learns it. The presence goes within 5 s; it comes back when the path does."""
    book = await add_book(aconn, "Tunnel")
    hole = BlackHole(notifier)
    async with hole as proxied, ws_connect(notifier) as viewer, ws_connect(
        proxied, headers={"Host": notifier.removeprefix("http://")}  # the name the notifier answers to
    ) as editor:
        await viewer.subscribe("v")
        assert (await editor.subscribe("e"))["type"] == "subscribed"
        # A client reads all the time (that is what answers pings: aiohttp pongs as it reads).
        reading = asyncio.create_task(editor.until(lambda f: False, timeout=60))
        await editor.send(type="presence", ref="e", pk={"id": book}, state="editing", name="Far")
        seen = await viewer.until(is_presence, timeout=2.0)
        hole.flowing.clear()
        started = time.monotonic()
        gone = await viewer.until(withdrawn, timeout=8.0)
        elapsed = time.monotonic() - started
        assert gone["state"] is None and gone["session"] == seen["session"]
        assert elapsed < 5.0, f"presence behind a black hole went after {elapsed:.1f}s"
        hole.flowing.set()
        back = await viewer.until(announced, timeout=3.0)
        assert (back["session"], back["state"]) == (seen["session"], "editing")
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
