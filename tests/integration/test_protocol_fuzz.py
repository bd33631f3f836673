"""Fuzz the WebSocket protocol: any frame gets an error frame or a defined close; no crash."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.servers import Process, free_port, wait_port

ERROR_CODES = {
    "bad_json",
    "bad_frame",
    "unknown_type",
    "unknown_table",
    "unknown_column",
    "unknown_operator",
    "bad_value",
    "bad_cursor",
    "duplicate_ref",
    "unknown_ref",
    "forbidden",
    "too_many_subscriptions",
    "rate_limited",
    "unavailable",
}
FRAME_TYPES = {"subscribed", "change", "checkpoint", "resync_required", "error", "pong"}
CLOSE_CODES = {1009, 4029}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
where_like = st.dictionaries(
    st.sampled_from(["title", "owner", "num_pages", "created_at", "zz"]),
    st.dictionaries(
        st.sampled_from(["eq", "neq", "lt", "gte", "in", "like", "is_null", "zz"]), json_values, max_size=2
    )
    | json_values,
    max_size=3,
)
frame_objects = st.fixed_dictionaries(
    {"type": st.sampled_from(["subscribe", "unsubscribe", "ping", "nope"]) | st.text(max_size=6)},
    optional={
        "ref": st.sampled_from(["a", "b"]) | st.text(max_size=70) | json_values,
        "table": st.sampled_from(["books", "authors", "public.books", "nope", "rowcast.changes"])
        | json_values,
        "where": where_like | json_values,
        "columns": st.lists(st.sampled_from(["id", "title", "zz"]), max_size=3) | json_values,
        "cursor": st.sampled_from(["1:2:", "5:3:", "x", "99999999:99999999:"]) | json_values,
        "mode": st.sampled_from(["all", "latest"]) | json_values,
    },
)
frames = st.lists(
    frame_objects.map(json.dumps)
    | json_values.map(json.dumps)
    | st.text(max_size=60)
    | st.binary(max_size=40),
    min_size=1,
    max_size=8,
)


@pytest.fixture(scope="module")
def fuzz_server(pg_server: Any, template_db: str) -> Iterator[str]:
    with pg_server.database(template_db) as url:
        port = free_port()
        proc = Process(["notifier", "--auth", "open", "--port", str(port), "--database-url", url], {}).start()
        try:
            wait_port(port)
            yield f"http://127.0.0.1:{port}"
            assert proc.proc is not None and proc.proc.poll() is None, "the notifier process died"
        finally:
            proc.stop()
            proc.close()


async def exchange(base: str, sequence: list[str | bytes]) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(base.replace("http", "ws") + "/ws") as ws:
        for item in sequence:
            if isinstance(item, bytes):
                await ws.send_bytes(item)
            else:
                await ws.send_str(item)
        await ws.send_str('{"type": "ping"}')
        async with asyncio.timeout(10):
            while True:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    assert ws.close_code in CLOSE_CODES, (msg, ws.close_code)
                    return
                frame = json.loads(msg.data)
                assert frame["type"] in FRAME_TYPES, frame
                if frame["type"] == "error":
                    assert frame["code"] in ERROR_CODES and isinstance(frame["message"], str), frame
                if frame["type"] == "pong":
                    return


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=frames)
def test_any_frames_get_error_frames_or_a_defined_close_and_never_crash_the_server(
    fuzz_server: str, sequence: list[str | bytes]
) -> None:
    asyncio.run(exchange(fuzz_server, sequence))


def test_server_still_serves_after_the_fuzz(fuzz_server: str) -> None:
    asyncio.run(exchange(fuzz_server, ['{"type": "subscribe", "ref": "ok", "table": "books"}']))
