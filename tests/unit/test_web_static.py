"""web.setup: the page's files served at / with their content types and security headers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from rowcast import web as web_page
from rowcast.settings import Settings


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    web_page.setup(app, Settings(auth="open"))
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("path", "content_type", "needle"),
    [
        ("/", "text/html", b"<!doctype html>"),
        ("/index.html", "text/html", b"<!doctype html>"),
        ("/rowcast.js", "text/javascript", b"export { connect"),
        ("/app.js", "text/javascript", b"LiveCollection"),
        ("/style.css", "text/css", b":focus-visible"),
        ("/favicon.svg", "image/svg+xml", b"<svg"),
        ("/status", "text/html", b"status.js"),
        ("/status.js", "text/javascript", b"/status.json"),
    ],
)
async def test_page_files_are_served_with_their_content_type(
    client: TestClient[web.Request, web.Application], path: str, content_type: str, needle: bytes
) -> None:
    response = await client.get(path)
    assert response.status == 200
    assert response.content_type == content_type
    assert needle in await response.read()


async def test_every_page_response_carries_the_security_headers(
    client: TestClient[web.Request, web.Application],
) -> None:
    for path in ("/", "/rowcast.js", "/style.css"):
        response = await client.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self';" in csp
        assert "'unsafe-inline'" not in csp
        assert "frame-ancestors 'none'" in csp
        assert "connect-src 'self' ws: wss:" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_an_unchanged_file_revalidates_with_304(
    client: TestClient[web.Request, web.Application],
) -> None:
    first = await client.get("/rowcast.js")
    again = await client.get("/rowcast.js", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304
    assert again.headers["Content-Security-Policy"]


@pytest.mark.parametrize("path", ["/__init__.py", "/package.json", "/../pyproject.toml", "/ws", "/nope.js"])
async def test_only_page_files_are_served(
    client: TestClient[web.Request, web.Application], path: str
) -> None:
    assert (await client.get(path)).status == 404


@pytest.mark.parametrize("name", ["index.html", "status.html"])
def test_the_page_has_no_inline_script_style_or_handlers(name: str) -> None:
    html = web_page.load_files()[name].body.decode()
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None
    assert "<style" not in html
    assert re.search(r"\s(on[a-z]+|style)\s*=", html) is None
    assert "javascript:" not in html


def test_the_scripts_never_parse_data_as_html_or_code() -> None:
    for name, file in web_page.load_files().items():
        if name.endswith(".js"):
            source = file.body.decode()
            for sink in (
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
            ):
                assert sink not in source, f"{name} uses {sink}"
