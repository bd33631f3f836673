"""Bad input gets a JSON error with the right status, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import test_utils, web
from rowcast.api.app import setup

from tests.integration.test_api_support import Client, api_client, create, settings

BOOK = {"title": "Dune", "author": "Herbert", "num_pages": 412, "owner": None}


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Client]:
    async with api_client(db_url, max_body_bytes=2000) as client:
        yield client


async def error(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    assert isinstance(body["error"], str) and isinstance(body["message"], str)
    return body


async def test_malformed_json_is_400(api: Client) -> None:
    for raw in (b'{"title": ', b"", b'{"title": NaN}', b"\xff\xfe", b"[" * 1000):
        response = await api.post("/api/books", data=raw, headers={"Content-Type": "application/json"})
        assert (await error(response, 400))["error"] == "bad_json"


async def test_body_that_is_not_json_is_415(api: Client) -> None:
    plain = await api.post("/api/books", data=b'{"title": "x"}', headers={"Content-Type": "text/plain"})
    assert (await error(plain, 415))["error"] == "unsupported_media_type"
    missing = await api.post("/api/books", data=b'{"title": "x"}')
    await error(missing, 415)
    latin = await api.post(
        "/api/books", data=b'{"title": "x"}', headers={"Content-Type": "application/json; charset=latin-1"}
    )
    await error(latin, 415)
    merge = await api.post(
        "/api/books", data=b'{"title": "x"}', headers={"Content-Type": "application/merge-patch+json"}
    )
    assert merge.status == 201


async def test_body_over_the_limit_is_413_with_or_without_a_content_length(api: Client) -> None:
    big = {"title": "x" * 3000}
    sized = await api.post("/api/books", json=big)
    assert (await error(sized, 413))["error"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"title": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    chunked = await api.post("/api/books", data=chunks(), headers={"Content-Type": "application/json"})
    await error(chunked, 413)
    assert (await (await api.get("/api/books")).json())["total"] == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_pages", True, "must be an integer"),
        ("num_pages", 1.5, "must be an integer"),
        ("num_pages", "12", "must be an integer"),
        ("num_pages", 0, "between 1 and 100000"),
        ("num_pages", 100_001, "between 1 and 100000"),
        ("title", "", "at least 1"),
        ("title", "x" * 301, "at most 300"),
        ("title", None, "may not be null"),
        ("title", 7, "must be a string"),
        ("title", "nul\x00byte", "NUL"),
        ("title", "\ud800", "Unicode"),
        ("author", "y" * 201, "at most 200"),
        ("shelf", "A", "unknown field"),
        ("id", 5, "read-only"),
        ("version", 9, "read-only"),
    ],
)
async def test_invalid_field_is_422_naming_the_field(
    api: Client, field: str, value: Any, message: str
) -> None:
    body = await error(await api.post("/api/books", json={**BOOK, field: value}), 422)
    assert body["error"] == "validation_failed"
    assert list(body["fields"]) == [field] and message in body["fields"][field]


async def test_create_without_a_required_field_is_422(api: Client) -> None:
    body = await error(await api.post("/api/books", json={"author": "nobody"}), 422)
    assert body["fields"] == {"title": "required"}


async def test_integral_float_is_accepted_as_an_integer_like_json_schema_says(api: Client) -> None:
    book = await create(api, "/api/books", {"title": "t", "num_pages": 12.0})
    assert book["num_pages"] == 12 and isinstance(book["num_pages"], int)


async def test_put_needs_every_writable_field_and_patch_any_one(api: Client) -> None:
    book = await create(api, "/api/books", BOOK)
    path = f"/api/books/{book['id']}"
    put = await error(await api.put(path, json={"title": "only"}, headers={"If-Match": '"1"'}), 422)
    assert put["fields"] == {"author": "required", "num_pages": "required", "owner": "required"}
    empty = await error(await api.patch(path, json={}, headers={"If-Match": '"1"'}), 422)
    assert "at least one field" in empty["message"]
    listed = await error(await api.patch(path, json=["title"], headers={"If-Match": '"1"'}), 422)
    assert "JSON object" in listed["message"]
    assert (await (await api.get(path)).json())["version"] == 1


@pytest.mark.parametrize("ident", ["abc", "-1", "1.5", "99999999999", "0x10", "٣"])
async def test_unknown_or_non_integer_id_is_404(api: Client, ident: str) -> None:
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        response = await api.request(method, f"/api/books/{ident}", json=BOOK, headers={"If-Match": "*"})
        assert (await error(response, 404))["error"] == "not_found"


async def test_wrong_method_is_405_with_an_allow_header(api: Client) -> None:
    item = await error(await api.post("/api/books/1", json=BOOK), 405)
    assert item["error"] == "method_not_allowed"
    response = await api.post("/api/books/1", json=BOOK)
    assert set(response.headers["Allow"].split(",")) == {"GET", "PUT", "PATCH", "DELETE"}
    collection = await api.delete("/api/books")
    await error(collection, 405)
    assert set(collection.headers["Allow"].split(",")) == {"GET", "POST"}


async def test_unknown_api_path_is_a_json_404(api: Client) -> None:
    assert (await error(await api.get("/api/nosuch"), 404))["error"] == "not_found"


async def test_malformed_if_match_is_400(api: Client) -> None:
    book = await create(api, "/api/books", BOOK)
    response = await api.patch(f"/api/books/{book['id']}", json={"title": "t"}, headers={"If-Match": "3"})
    assert (await error(response, 400))["error"] == "bad_header"


async def test_unprintable_or_long_actor_is_400(api: Client) -> None:
    for actor in ("x" * 101, "tab\there", "%09tab", "%ff%fe", "%C3"):
        response = await api.post("/api/books", json=BOOK, headers={"X-Actor": actor})
        assert (await error(response, 400))["error"] == "bad_header"


async def test_request_id_is_echoed_on_every_api_response_and_replaced_when_invalid(api: Client) -> None:
    for path in ("/api/books", "/api/books/abc", "/api/nosuch", "/api/healthz", "/api/openapi.json"):
        response = await api.get(path, headers={"X-Request-ID": "req-1.a:b_c"})
        assert response.headers["X-Request-ID"] == "req-1.a:b_c"
    generated = await api.get("/api/books", headers={"X-Request-ID": "spaces are not allowed"})
    assert len(generated.headers["X-Request-ID"]) == 32
    assert (await api.get("/api/books", headers={"X-Request-ID": "x" * 129})).headers[
        "X-Request-ID"
    ] != "x" * 129


async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("a bug")


async def test_unexpected_errors_are_logged_500_json_only_under_api(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = web.Application()
    setup(app, settings(db_url))
    app.router.add_get("/api/boom", boom)
    app.router.add_get("/elsewhere", boom)
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        response = await client.get("/api/boom")
        body = await error(response, 500)
        assert body["error"] == "internal_error"
        assert response.headers["X-Request-ID"] in body["message"]
        assert "a bug" not in body["message"]
        assert any("a bug" in (r.exc_text or "") for r in caplog.records if r.name == "rowcast.api")
        outside = await client.get("/elsewhere")
        assert outside.status == 500 and "X-Request-ID" not in outside.headers
        assert outside.content_type != "application/json"
        page = await client.get("/not-the-api")
        assert page.status == 404 and page.content_type != "application/json"
