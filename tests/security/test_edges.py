"""Finding 14: half-sent requests held forever, tokens in the log, /metrics open to anyone."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.security.conftest import TOKEN_ENV, bearer, token
from tests.servers import rowcast_server

HALF_SENT = 300  # as many as in the report


async def _half_sent(port: int) -> float:
    """Send a request line and one header, never the blank line; seconds until the server hangs up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    await writer.drain()
    started = asyncio.get_running_loop().time()
    try:
        assert await reader.read() == b""  # closed without an answer
    finally:
        writer.close()
    return asyncio.get_running_loop().time() - started


@pytest.mark.parametrize("command", ["api", "notifier"])
async def test_half_sent_requests_are_closed_after_the_header_timeout(db_url: str, command: str) -> None:
    env = {**TOKEN_ENV, "ROWCAST_HEADER_TIMEOUT": "1s"}
    async with rowcast_server(command, db_url, env) as server:
        async with asyncio.timeout(10):
            held = await asyncio.gather(*(_half_sent(server.port) for _ in range(HALF_SENT)))
        assert max(held) < 5
        async with aiohttp.ClientSession() as http:
            path = "/api/healthz" if command == "api" else "/healthz"
            async with http.get(server.base + path) as resp:
                assert resp.status == 200  # whole requests are still served


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    return answer


@pytest.mark.parametrize("command", ["api", "notifier"])
async def test_over_long_request_lines_and_headers_never_log_the_token(db_url: str, command: str) -> None:
    tok = token("alice", read=["books"])
    padding = "x" * 9000
    async with rowcast_server(command, db_url, {**TOKEN_ENV, "ROWCAST_LOG_LEVEL": "DEBUG"}) as server:
        line = await _raw(
            server.port,
            f"GET /changes?table=books&token={tok}{padding} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),
        )
        header = await _raw(
            server.port,
            f"GET /changes HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok}{padding}\r\n\r\n".encode(),
        )
        assert line.startswith(b"HTTP/1.") and b" 400 " in line.split(b"\r\n")[0]
        assert header.startswith(b"HTTP/1.") and b" 400 " in header.split(b"\r\n")[0]
        log = server.stop()
    assert "malformed request" in log  # the refusal is logged, without its bytes
    _, payload, signature = tok.split(".")
    for secret in (payload[:12], signature[:12], TOKEN_ENV["ROWCAST_JWT_SECRET"]):
        assert secret not in log


async def test_metrics_need_a_token_with_the_metrics_grant(db_url: str) -> None:
    async with rowcast_server("notifier", db_url, TOKEN_ENV) as server, aiohttp.ClientSession() as http:
        async with http.get(server.base + "/metrics") as resp:
            assert resp.status == 401 and (await resp.json())["error"] == "unauthorized"
        async with http.get(server.base + "/metrics", headers=bearer(token("alice", read=["books"]))) as resp:
            assert resp.status == 403 and "metrics" in (await resp.json())["message"]
        async with http.get(
            server.base + "/metrics", headers=bearer(token("prometheus", read=[], metrics=True))
        ) as resp:
            assert resp.status == 200 and "rowcast_connections" in await resp.text()


async def test_metrics_stay_open_in_open_mode(db_url: str) -> None:
    async with (
        rowcast_server("notifier", db_url, {"ROWCAST_AUTH": "open"}) as server,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(server.base + "/metrics") as resp:
            assert resp.status == 200
