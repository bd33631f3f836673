"""CRUD through the API with optimistic concurrency: ETag on reads, If-Match on every write."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from aiohttp import test_utils
from rowcast.api import store
from rowcast.api.app import create_app

from rowcast.embedded import binary, free_port
from rowcast.settings import Settings
from tests.integration.test_api_support import Client, api_client, create

BOOK = {"title": "Dune", "author": "Herbert", "num_pages": 412, "owner": "alice"}


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Client]:
    async with api_client(db_url) as client:
        yield client


async def test_book_lifecycle_create_read_replace_patch_delete(api: Client) -> None:
    created = await api.post("/api/books", json=BOOK)
    assert created.status == 201
    book = await created.json()
    assert created.headers["ETag"] == '"1"'
    assert created.headers["Location"] == f"/api/books/{book['id']}"
    assert {k: book[k] for k in BOOK} == BOOK and book["version"] == 1
    assert set(book) == {"id", *BOOK, "version", "created_at", "updated_at"}

    read = await api.get(created.headers["Location"])
    assert read.status == 200 and read.headers["ETag"] == '"1"'
    assert await read.json() == book

    replaced = await api.put(
        f"/api/books/{book['id']}",
        json={"title": "Dune Messiah", "author": "Herbert", "num_pages": 256, "owner": None},
        headers={"If-Match": '"1"'},
    )
    assert replaced.status == 200, await replaced.text()
    assert replaced.headers["ETag"] == '"2"'
    body = await replaced.json()
    assert (body["title"], body["owner"], body["version"]) == ("Dune Messiah", None, 2)
    assert body["updated_at"] > book["updated_at"]

    patched = await api.patch(
        f"/api/books/{book['id']}", json={"num_pages": 300}, headers={"If-Match": '"2"'}
    )
    assert patched.status == 200
    assert (await patched.json())["num_pages"] == 300 and patched.headers["ETag"] == '"3"'
    assert (await patched.json())["title"] == "Dune Messiah"  # PATCH leaves other fields alone

    deleted = await api.delete(f"/api/books/{book['id']}", headers={"If-Match": '"3"'})
    assert deleted.status == 204 and await deleted.read() == b""
    assert (await api.get(f"/api/books/{book['id']}")).status == 404


async def test_create_fills_columns_the_database_defaults(api: Client) -> None:
    book = await create(api, "/api/books", {"title": "Untitled"})
    assert (book["author"], book["num_pages"], book["owner"]) == ("", None, None)


async def test_authors_are_served_by_the_same_declarative_handlers(api: Client) -> None:
    author = await create(api, "/api/authors", {"name": "Le Guin", "born": 1929})
    assert author["version"] == 1 and author["owner"] is None
    path = f"/api/authors/{author['id']}"
    patched = await api.patch(path, json={"born": 1930}, headers={"If-Match": '"1"'})
    assert (await patched.json())["born"] == 1930
    stale = await api.put(
        path, json={"name": "U. K. Le Guin", "born": 1929, "owner": None}, headers={"If-Match": '"1"'}
    )
    assert stale.status == 412
    listed = await (await api.get("/api/authors")).json()
    assert [a["name"] for a in listed["items"]] == ["Le Guin"]
    assert (await api.delete(path, headers={"If-Match": '"2"'})).status == 204
    assert (await api.get(path)).status == 404


async def test_write_with_a_stale_etag_gets_412_with_the_current_row(api: Client) -> None:
    book = await create(api, "/api/books", BOOK)
    path = f"/api/books/{book['id']}"
    first = await api.patch(path, json={"title": "first"}, headers={"If-Match": '"1"'})
    assert first.status == 200
    second = await api.patch(path, json={"title": "second"}, headers={"If-Match": '"1"'})
    assert second.status == 412
    body = await second.json()
    assert body["error"] == "precondition_failed" and "version 2" in body["message"]
    assert body["current"]["title"] == "first" and body["current"]["version"] == 2
    assert second.headers["ETag"] == '"2"'
    assert (await (await api.get(path)).json())["title"] == "first"


async def test_update_from_another_writer_makes_the_api_etag_stale(api: Client, db_url: str) -> None:
    book = await create(api, "/api/books", BOOK)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE books SET num_pages = 9 WHERE id = %s", (book["id"],))
    response = await api.put(f"/api/books/{book['id']}", json=BOOK, headers={"If-Match": '"1"'})
    assert response.status == 412
    current = (await response.json())["current"]
    assert (current["num_pages"], current["version"]) == (9, 2)


async def test_update_typed_in_the_real_psql_binary_makes_the_api_etag_stale(
    api: Client, db_url: str
) -> None:
    book = await create(api, "/api/books", BOOK)
    result = subprocess.run(
        [
            str(binary("psql")),
            db_url,
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f"UPDATE books SET title = 'typed' WHERE id = {int(book['id'])}",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "PGAPPNAME"},
    )
    assert result.returncode == 0, result.stderr
    response = await api.delete(f"/api/books/{book['id']}", headers={"If-Match": '"1"'})
    assert response.status == 412
    assert (await response.json())["current"]["title"] == "typed"
    assert (await api.get(f"/api/books/{book['id']}")).status == 200


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_write_without_if_match_gets_428(api: Client, method: str) -> None:
    book = await create(api, "/api/books", BOOK)
    response = await api.request(method, f"/api/books/{book['id']}", json=BOOK)
    assert response.status == 428
    assert (await response.json())["error"] == "precondition_required"
    assert (await (await api.get(f"/api/books/{book['id']}")).json())["version"] == 1


async def test_if_match_star_overwrites_whatever_version_is_there(api: Client) -> None:
    book = await create(api, "/api/books", BOOK)
    path = f"/api/books/{book['id']}"
    await api.patch(path, json={"title": "moved on"}, headers={"If-Match": '"1"'})
    forced = await api.put(path, json=BOOK, headers={"If-Match": "*"})
    assert forced.status == 200 and (await forced.json())["title"] == "Dune"
    assert forced.headers["ETag"] == '"3"'
    assert (await api.delete(path, headers={"If-Match": "*"})).status == 204


async def test_if_match_with_several_etags_matches_any_of_them_and_weak_ones_never(api: Client) -> None:
    book = await create(api, "/api/books", BOOK)
    path = f"/api/books/{book['id']}"
    weak = await api.patch(path, json={"title": "w"}, headers={"If-Match": 'W/"1"'})
    assert weak.status == 412
    listed = await api.patch(path, json={"title": "l"}, headers={"If-Match": '"7", "1"'})
    assert listed.status == 200


async def test_write_to_a_missing_row_is_404_even_when_forced(api: Client) -> None:
    for if_match in ('"1"', "*"):
        put = await api.put("/api/books/999999", json=BOOK, headers={"If-Match": if_match})
        assert put.status == 404 and (await put.json())["error"] == "not_found"
        assert (await api.delete("/api/books/999999", headers={"If-Match": if_match})).status == 404


async def test_concurrent_writes_with_the_same_etag_let_exactly_one_win(api: Client) -> None:
    book = await create(api, "/api/books", BOOK)
    path = f"/api/books/{book['id']}"
    async with asyncio.timeout(30):
        responses = await asyncio.gather(
            *(api.patch(path, json={"num_pages": n}, headers={"If-Match": '"1"'}) for n in range(1, 11))
        )
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] + [412] * 9
    final = await (await api.get(path)).json()
    assert final["version"] == 2


async def test_health_is_ok_while_the_database_answers(api: Client) -> None:
    response = await api.get("/api/healthz")
    assert response.status == 200 and await response.json() == {"status": "ok"}


async def test_api_reconnects_when_its_database_connections_are_killed(api: Client, db_url: str) -> None:
    book = await create(api, "/api/books", BOOK)  # the pool now holds a connection
    with psycopg.connect(db_url, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
            "WHERE application_name = 'api' AND datname = current_database()"
        ).fetchone()
    assert killed is not None and killed[0] >= 1
    response = await api.get(f"/api/books/{book['id']}")
    assert response.status == 200


async def test_write_to_a_row_locked_in_psql_gives_up_with_503_instead_of_hanging(
    api: Client, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "LOCK_TIMEOUT", "200ms")
    book = await create(api, "/api/books", BOOK)
    path = f"/api/books/{book['id']}"
    with psycopg.connect(db_url) as dba:  # BEGIN; SELECT ... FOR UPDATE; and then lunch
        dba.execute("SELECT 1 FROM books WHERE id = %s FOR UPDATE", (book["id"],))
        async with asyncio.timeout(10):
            blocked = await api.patch(path, json={"title": "x"}, headers={"If-Match": '"1"'})
        assert blocked.status == 503 and "locked" in (await blocked.json())["message"]
        assert blocked.headers["Retry-After"] == "1"
        assert (await api.get(path)).status == 200  # reads do not wait for row locks
    retried = await api.patch(path, json={"title": "x"}, headers={"If-Match": '"1"'})
    assert retried.status == 200


async def test_unreachable_database_gives_503_json_not_500() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    async with api_client(url) as client:
        health = await client.get("/api/healthz")
        assert health.status == 503 and (await health.json())["status"] == "unavailable"
        listing = await client.get("/api/books")
        assert listing.status == 503 and (await listing.json())["error"] == "unavailable"


async def test_the_api_is_handed_its_database_and_never_starts_one(tmp_path: Path) -> None:
    """Only the composition (rowcast.commands) resolves DATABASE_URL or starts the embedded
    Postgres; an API app built without a URL says so when it starts, and starts nothing."""
    app = create_app(Settings(database_url=None, auth="open", data_dir=tmp_path))
    with pytest.raises(ValueError, match=r"needs settings\.database_url"):
        async with test_utils.TestClient(test_utils.TestServer(app)):
            pass
    assert list(tmp_path.iterdir()) == []
