"""Token auth, table grants, row scopes, and CORS on /api."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rowcast.auth import issue_token
from tests.integration.test_api_support import SECRET, Client, api_client, create, token

ALICE = token("alice", scopes=["books.owner=alice"])


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Client]:
    async with api_client(db_url, auth="token", jwt_secret=SECRET) as client:
        yield client


@pytest.fixture
async def bobs_book(api: Client) -> dict[str, Any]:
    return await create(api, "/api/books", {"title": "Emma", "owner": "bob"}, **token("admin"))


async def unauthorized(response: Any) -> str:
    assert response.status == 401
    assert (await response.json())["error"] == "unauthorized"
    challenge: str = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer")
    return challenge


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, ""),
        ("Basic YWxpY2U6eA==", "invalid_request"),
        ("Bearer not-a-jwt", "invalid_token"),
        (f"Bearer {issue_token('wrong-secret-wrong-secret-wrong-secret', 'alice')}", "invalid_token"),
        (f"Bearer {issue_token(SECRET, 'alice', audience='elsewhere')}", "invalid_token"),
        (f"Bearer {issue_token(SECRET, 'alice', ttl=60, now=time.time() - 3600)}", "invalid_token"),
    ],
)
async def test_missing_or_invalid_token_is_401_with_a_bearer_challenge(
    api: Client, authorization: str | None, reason: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in (("GET", "/api/books"), ("GET", "/api/books/1"), ("POST", "/api/books")):
        challenge = await unauthorized(await api.request(method, path, headers=headers, json={"title": "x"}))
        assert reason in challenge


async def test_expired_token_says_so(api: Client) -> None:
    expired = {"Authorization": f"Bearer {issue_token(SECRET, 'alice', ttl=60, now=time.time() - 3600)}"}
    response = await api.get("/api/books", headers=expired)
    assert (await response.json())["message"] == "token expired"


async def test_health_and_the_openapi_document_need_no_token(api: Client) -> None:
    assert (await api.get("/api/healthz")).status == 200
    assert (await api.get("/api/openapi.json")).status == 200


async def test_tables_outside_the_token_grant_are_403(api: Client, bobs_book: dict[str, Any]) -> None:
    reader = token("rita", read=["books"], write=[])
    assert (await api.get("/api/books", headers=reader)).status == 200
    assert (await api.get(f"/api/books/{bobs_book['id']}", headers=reader)).status == 200
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        path = "/api/books" if method == "POST" else f"/api/books/{bobs_book['id']}"
        response = await api.request(method, path, json={"title": "x"}, headers={**reader, "If-Match": "*"})
        assert response.status == 403 and (await response.json())["error"] == "forbidden"
    for path in ("/api/authors", "/api/authors/1"):
        response = await api.get(path, headers=reader)
        assert response.status == 403 and "authors" in (await response.json())["message"]


async def test_scoped_list_shows_only_rows_in_scope(api: Client, bobs_book: dict[str, Any]) -> None:
    await create(api, "/api/books", {"title": "Dune"}, **ALICE)
    mine = await (await api.get("/api/books", headers=ALICE)).json()
    assert [b["title"] for b in mine["items"]] == ["Dune"] and mine["total"] == 1
    others = await (await api.get("/api/books?owner=bob", headers=ALICE)).json()
    assert (others["items"], others["total"]) == ([], 0)
    assert (await (await api.get("/api/books", headers=token("admin"))).json())["total"] == 2


async def test_row_outside_scope_is_indistinguishable_from_a_missing_one(
    api: Client, bobs_book: dict[str, Any]
) -> None:
    path = f"/api/books/{bobs_book['id']}"
    missing = await api.get("/api/books/999999", headers=ALICE)
    hidden = await api.get(path, headers=ALICE)
    assert hidden.status == missing.status == 404
    assert (await hidden.json())["error"] == (await missing.json())["error"] == "not_found"
    for method in ("PUT", "PATCH", "DELETE"):
        body = {"title": "mine now", "author": "", "num_pages": None, "owner": "alice"}
        response = await api.request(method, path, json=body, headers={**ALICE, "If-Match": "*"})
        assert response.status == 404
    still = await (await api.get(path, headers=token("admin"))).json()
    assert (still["title"], still["owner"], still["version"]) == ("Emma", "bob", 1)


async def test_scoped_create_fills_the_scope_and_refuses_another_value(api: Client) -> None:
    filled = await create(api, "/api/books", {"title": "Dune"}, **ALICE)
    assert filled["owner"] == "alice"
    for owner in ("bob", None):
        response = await api.post("/api/books", json={"title": "x", "owner": owner}, headers=ALICE)
        assert response.status == 403 and "owner" in (await response.json())["message"]
    explicit = await api.post("/api/books", json={"title": "y", "owner": "alice"}, headers=ALICE)
    assert explicit.status == 201


async def test_write_may_not_move_a_row_out_of_scope(api: Client) -> None:
    book = await create(api, "/api/books", {"title": "Dune"}, **ALICE)
    path = f"/api/books/{book['id']}"
    moved = await api.patch(path, json={"owner": "bob"}, headers={**ALICE, "If-Match": '"1"'})
    assert moved.status == 403
    put = {"title": "Dune", "author": "", "num_pages": 1, "owner": "mallory"}
    assert (await api.put(path, json=put, headers={**ALICE, "If-Match": '"1"'})).status == 403
    kept = await api.put(path, json={**put, "owner": "alice"}, headers={**ALICE, "If-Match": '"1"'})
    assert kept.status == 200 and (await kept.json())["owner"] == "alice"


async def test_numeric_scope_values_match_text_columns(api: Client) -> None:
    scoped = token("u42", scopes=["books.owner=42"])
    book = await create(api, "/api/books", {"title": "Dune"}, **scoped)
    assert book["owner"] == "42"
    assert (await (await api.get("/api/books", headers=scoped)).json())["total"] == 1


async def test_scope_on_an_unknown_column_fails_closed(api: Client, bobs_book: dict[str, Any]) -> None:
    odd = token("odd", scopes=["books.shelf=A"])
    assert (await api.get("/api/books", headers=odd)).status == 403
    assert (await api.get("/api/authors", headers=odd)).status == 200  # other tables are unaffected


ORIGIN = "https://app.example"


async def test_cors_headers_are_off_by_default(db_url: str) -> None:
    async with api_client(db_url) as client:
        response = await client.get("/api/books", headers={"Origin": ORIGIN})
        assert response.status == 200
        assert "Access-Control-Allow-Origin" not in response.headers
        preflight = await client.options(
            "/api/books", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
        )
        assert preflight.status == 405 and "Access-Control-Allow-Origin" not in preflight.headers


async def test_cors_headers_only_for_configured_origins(db_url: str) -> None:
    async with api_client(db_url, cors_origins=(ORIGIN,)) as client:
        allowed = await client.get("/api/books", headers={"Origin": ORIGIN})
        assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "ETag" in allowed.headers["Access-Control-Expose-Headers"]
        assert "Origin" in allowed.headers.getall("Vary")
        error = await client.get("/api/books/nope", headers={"Origin": ORIGIN})
        assert error.status == 404 and error.headers["Access-Control-Allow-Origin"] == ORIGIN
        other = await client.get("/api/books", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers

        preflight = await client.options(
            "/api/books/1", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "PATCH"}
        )
        assert preflight.status == 204
        assert "PATCH" in preflight.headers["Access-Control-Allow-Methods"]
        assert "If-Match" in preflight.headers["Access-Control-Allow-Headers"]
        assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
        foreign = await client.options(
            "/api/books", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert foreign.status == 405 and "Access-Control-Allow-Origin" not in foreign.headers
