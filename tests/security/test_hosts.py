"""Finding 5: no Host check (DNS rebinding) and a trusted X-Forwarded-Host."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import psycopg
import pytest

from rowcast.hosts import policy
from rowcast.settings import Settings
from tests.security.conftest import bearer, token
from tests.servers import Running, rowcast_server

AConn = psycopg.AsyncConnection[tuple[Any, ...]]


async def ws_status(base: str, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(base.replace("http", "ws", 1) + "/ws", headers=headers):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def test_dns_rebinding_is_refused_on_ws_sse_and_rest_in_open_mode(up: Running, aconn: AConn) -> None:
    evil = f"evil.example:{up.port}"
    headers = {"Host": evil, "Origin": f"http://{evil}"}
    assert await ws_status(up.base, headers) == 403
    async with aiohttp.ClientSession() as http:
        async with http.get(up.base + "/sse", params={"table": "books"}, headers=headers) as resp:
            assert resp.status == 403 and (await resp.json())["error"] == "host_not_allowed"
        async with http.post(up.base + "/api/books", json={"title": "rebound"}, headers=headers) as resp:
            assert resp.status == 403 and (await resp.json())["error"] == "host_not_allowed"
        async with http.get(up.base + "/", headers=headers) as resp:
            assert resp.status == 403
    assert await (await aconn.execute("SELECT count(*) FROM books WHERE title = 'rebound'")).fetchone() == (
        0,
    )
    # The names the server is really reached by still work, with their own Origin.
    for name in (f"127.0.0.1:{up.port}", f"localhost:{up.port}"):
        assert await ws_status(up.base, {"Host": name, "Origin": f"http://{name}"}) == 101


async def test_forwarded_host_is_not_trusted_by_default(up: Running) -> None:
    evil = f"evil.example:{up.port}"
    headers = {"X-Forwarded-Host": evil, "Origin": f"http://{evil}"}
    assert await ws_status(up.base, headers) == 403


async def test_forwarded_host_counts_when_configured(db_url: str) -> None:
    env = {"ROWCAST_TRUST_FORWARDED": "1", "ROWCAST_ALLOWED_HOSTS": "app.example"}
    async with rowcast_server("up", db_url, env) as server:
        ok = {"X-Forwarded-Host": "app.example", "Origin": "https://app.example"}
        assert await ws_status(server.base, ok) == 101
        assert (
            await ws_status(
                server.base, {"X-Forwarded-Host": "evil.example", "Origin": "https://evil.example"}
            )
            == 403
        )
        assert await ws_status(server.base, {"Origin": "https://app.example"}) == 403  # Host 127.0.0.1


async def test_token_mode_servers_check_the_host_too(api: Running, notifier: Running) -> None:
    tok = token("alice", read=["books"])
    async with aiohttp.ClientSession() as http:
        for base, path in ((api.base, "/api/books"), (notifier.base, "/changes?table=books")):
            async with http.get(base + path, headers={**bearer(tok), "Host": "evil.example"}) as resp:
                assert resp.status == 403 and (await resp.json())["error"] == "host_not_allowed"
            async with http.get(base + path, headers=bearer(tok)) as resp:
                assert resp.status == 200


@pytest.mark.parametrize(
    ("bind", "auth", "allowed", "refused"),
    [
        (
            "127.0.0.1",
            "open",
            ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "LOCALHOST.:8080"],
            ["localhost:9090", "evil.example:8080", "localhost"],
        ),
        ("::1", "token", ["[::1]:8080", "localhost:8080"], ["evil.example:8080"]),
        ("0.0.0.0", "open", ["localhost:8080", "127.0.0.1:49152"], ["evil.example:8080", "192.168.1.5:8080"]),
        ("0.0.0.0", "token", ["evil.example", "192.168.1.5:8080"], []),
        ("192.168.1.5", "open", ["192.168.1.5:8080"], ["localhost:8080", "evil.example:8080"]),
    ],
)
def test_default_host_allow_list_follows_the_bind_address(
    bind: str, auth: str, allowed: list[str], refused: list[str]
) -> None:
    hosts = policy(Settings(host=bind, port=8080, auth=auth, jwt_secret="s" * 32))
    assert all(hosts.allows(h, 8080) for h in allowed), hosts.describe()
    assert not any(hosts.allows(h, 8080) for h in refused), hosts.describe()


def test_configured_hosts_with_and_without_ports() -> None:
    hosts = policy(Settings(auth="open", allowed_hosts=("app.example", "api.example:8443")))
    assert hosts.allows("app.example") and hosts.allows("APP.example:1234")
    assert hosts.allows("api.example:8443") and not hosts.allows("api.example")
    assert not hosts.allows("127.0.0.1:8080")
    assert policy(Settings(auth="open", allowed_hosts=("*",))).allows("anything.example")


async def test_a_request_without_a_host_header_is_no_browser_and_is_served(up: Running) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", up.port)
    writer.write(b"GET /api/books HTTP/1.0\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    assert answer.split(b"\r\n")[0].endswith(b"200 OK")
