"""Finding 10: a plain GET /ws answered 500 and logged two tracebacks."""

from __future__ import annotations

import aiohttp

from tests.security.conftest import bearer, token
from tests.servers import Running


async def _plain_get(base: str, headers: dict[str, str]) -> tuple[int, dict[str, str], dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.get(base + "/ws", headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def test_get_ws_without_upgrade_is_a_426_json_error_without_a_traceback(notifier: Running) -> None:
    for headers in ({}, bearer(token("alice", read=["books"]))):
        for _ in range(3):
            status, response_headers, body = await _plain_get(notifier.base, headers)
            assert status == 426 and body["error"] == "upgrade_required" and body["message"]
            assert response_headers["Upgrade"] == "websocket"
    # A handshake with an Upgrade header but no key is malformed: 400, still JSON.
    status, _, body = await _plain_get(notifier.base, {"Upgrade": "websocket", "Connection": "Upgrade"})
    assert status == 400 and body["error"] == "bad_handshake"
    log = notifier.stop()
    assert "Traceback" not in log and "Error handling request" not in log


async def test_get_ws_without_upgrade_on_rowcast_up(up: Running) -> None:
    status, _, body = await _plain_get(up.base, {})
    assert status == 426 and body["error"] == "upgrade_required"
    assert "Traceback" not in up.stop()
