"""One error shape (issue 15): every error the notifier sends — a WebSocket `error` frame, an
SSE or long-poll refusal, a handshake refusal — is `{"error": code, "message": text, ...}`.
Error frames used to carry only `code` while HTTP bodies carried `error`: a client needed two
readers for one vocabulary. Frames keep `code` (the same value) for older clients."""

from __future__ import annotations

from typing import Any

import aiohttp

from rowcast import wire
from tests.security.conftest import bearer, token
from tests.servers import Running, ws_connect


def assert_one_shape(body: dict[str, Any], code: str) -> None:
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    assert code in wire.FRAME_ERRORS | wire.HTTP_ERRORS


async def _http(base: str, path: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(base + path, params=params, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_frames_and_http_bodies_share_one_error_shape(notifier: Running) -> None:
    reader = bearer(token("alice", read=["books", "no_such_table"]))
    async with ws_connect(notifier.base, headers=reader) as client:
        await client.ws.send_bytes(b"\x00binary")
        frame = await client.until(lambda f: f["type"] == "error")
        assert_one_shape(frame, "bad_frame")
        assert frame["code"] == frame["error"]  # kept for clients written before the one shape

        reply = await client.subscribe(ref="x", table="no_such_table")
        assert reply["type"] == "error" and reply["ref"] == "x"
        assert_one_shape(reply, "unknown_table")

        reply = await client.subscribe(ref="y", cursor="not-a-cursor")
        assert_one_shape(reply, "bad_cursor")

    status, body = await _http(notifier.base, "/sse", {"table": "no_such_table"}, reader)
    assert status == 400, (status, body)
    assert_one_shape(body, "unknown_table")

    status, body = await _http(notifier.base, "/changes", {"table": "books", "cursor": "garbage"}, reader)
    assert status == 400
    assert_one_shape(body, "bad_cursor")

    status, body = await _http(notifier.base, "/changes", {"table": "books"}, {})
    assert status == 401
    assert_one_shape(body, "unauthorized")

    status, body = await _http(notifier.base, "/ws", {}, reader)
    assert status == 426
    assert_one_shape(body, "upgrade_required")
    assert "Traceback" not in notifier.stop()


def test_an_unknown_error_code_is_a_bug_not_a_message() -> None:
    assert wire.error("bad_cursor", "no") == {"error": "bad_cursor", "message": "no"}
    assert wire.error_frame("forbidden", "no", ref="s") == {
        "error": "forbidden", "code": "forbidden", "message": "no", "ref": "s"
    }  # fmt: skip
    try:
        wire.error("bad_curser", "typo")
    except ValueError as exc:
        assert "bad_curser" in str(exc)
    else:
        raise AssertionError("wire.error accepted a code it does not define")
