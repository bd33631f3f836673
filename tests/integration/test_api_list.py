"""GET /api/<resource>: pages, filters, sort, and the snapshot cursor that comes with the rows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from tests.integration.test_api_support import Client, api_client

BOOKS: list[dict[str, Any]] = [
    {"title": "Dune", "author": "Herbert", "num_pages": 412, "owner": "alice"},
    {"title": "Emma", "author": "Austen", "num_pages": 474, "owner": "bob"},
    {"title": "Dracula", "author": "Stoker", "num_pages": 418, "owner": "alice"},
    {"title": "Ubik", "author": "Dick", "num_pages": 99, "owner": None},
    {"title": "Beloved", "author": "Morrison", "num_pages": None, "owner": "carol"},
]


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Client]:
    async with api_client(db_url, max_page_size=100) as client:
        yield client


@pytest.fixture
def books(conn: psycopg.Connection[Any]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO books (title, author, num_pages, owner) VALUES (%(title)s, %(author)s, %(num_pages)s, %(owner)s)",
            BOOKS,
        )


async def titles(api: Client, query: str) -> list[str]:
    response = await api.get(f"/api/books?{query}")
    assert response.status == 200, await response.text()
    return [b["title"] for b in (await response.json())["items"]]


async def test_list_response_carries_items_cursor_limit_offset_and_total(api: Client, books: None) -> None:
    body = await (await api.get("/api/books")).json()
    assert set(body) == {"items", "cursor", "limit", "offset", "total"}
    assert (body["limit"], body["offset"], body["total"]) == (50, 0, 5)
    assert [b["title"] for b in body["items"]] == [b["title"] for b in BOOKS]  # by id by default
    xmin, xmax, _ = body["cursor"].split(":")
    assert int(xmin) <= int(xmax)


async def test_pages_follow_limit_and_offset_and_total_counts_all_matches(
    api: Client, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("INSERT INTO books (title, owner) SELECT 'b' || g, 'same' FROM generate_series(1, 120) g")
    first = await (await api.get("/api/books")).json()
    assert len(first["items"]) == 50 and first["total"] == 120
    seen: list[int] = []
    for offset in range(0, 120, 45):
        page = await (await api.get(f"/api/books?sort=owner&limit=45&offset={offset}")).json()
        seen += [b["id"] for b in page["items"]]
    assert len(seen) == len(set(seen)) == 120  # ties broken by id: no overlap, no gap
    assert (await (await api.get("/api/books?offset=500")).json())["items"] == []
    assert (await (await api.get("/api/books?limit=0")).json())["total"] == 120


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=101", "limit must be at most 100"),
        ("limit=-1", "limit must be a whole number"),
        ("limit=ten", "limit must be a whole number"),
        ("limit=1&limit=2", "at most once"),
        ("offset=1.5", "offset must be a whole number"),
        ("shelf=A", "unknown query parameter 'shelf'"),
        ("owner.contains=a", "unknown operator 'contains'"),
        ("num_pages.gt=many", "not an integer"),
        ("num_pages.gt=99999999999", "out of range"),
        ("num_pages.like=1%", "text columns only"),
        ("owner.is_null=yes", "not true or false"),
        ("created_at.gt=yesterday", "ISO 8601"),
        ("title.like=ends-with\\", "lone backslash"),
        ("title=nul%00", "NUL"),
        ("sort=shelf", "cannot sort by 'shelf'"),
        ("sort=title;DROP TABLE books", "cannot sort by"),
        ("sort=title,-title", "twice"),
        ("sort=", "cannot sort by ''"),
    ],
)
async def test_bad_list_query_is_400_with_a_clear_message(api: Client, query: str, message: str) -> None:
    response = await api.get(f"/api/books?{query}")
    assert response.status == 400
    body = await response.json()
    assert body["error"] == "bad_query" and message in body["message"], body


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("owner=alice", ["Dune", "Dracula"]),
        ("owner.eq=alice", ["Dune", "Dracula"]),
        ("owner.neq=alice", ["Emma", "Beloved"]),  # SQL semantics: null is not "not alice"
        ("num_pages.gt=412", ["Emma", "Dracula"]),
        ("num_pages.gte=412", ["Dune", "Emma", "Dracula"]),
        ("num_pages.lt=412", ["Ubik"]),
        ("num_pages.lte=99", ["Ubik"]),
        ("num_pages.gt=0", ["Dune", "Emma", "Dracula", "Ubik"]),  # a filter may name values no row can hold
        ("title.like=D%25", ["Dune", "Dracula"]),
        ("title.like=_mma", ["Emma"]),
        ("owner.in=bob,carol", ["Emma", "Beloved"]),
        ("num_pages.in=99,474", ["Emma", "Ubik"]),
        ("owner.is_null=true", ["Ubik"]),
        ("num_pages.is_null=false&owner=alice&num_pages.lt=415", ["Dune"]),
        ("owner=' OR 1=1 --", []),
        ("created_at.gt=2000-01-01T00:00:00Z", ["Dune", "Emma", "Dracula", "Ubik", "Beloved"]),
        ("created_at.lt=2000-01-01", []),
    ],
)
async def test_filters_select_matching_rows(
    api: Client, books: None, query: str, expected: list[str]
) -> None:
    assert await titles(api, query) == expected


async def test_total_counts_the_filtered_rows(api: Client, books: None) -> None:
    body = await (await api.get("/api/books?owner=alice&limit=1")).json()
    assert body["total"] == 2 and len(body["items"]) == 1


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sort=title", ["Beloved", "Dracula", "Dune", "Emma", "Ubik"]),
        ("sort=-num_pages", ["Beloved", "Emma", "Dracula", "Dune", "Ubik"]),  # nulls first descending
        ("sort=owner,-title", ["Dune", "Dracula", "Emma", "Beloved", "Ubik"]),
        ("sort=-id", ["Beloved", "Ubik", "Dracula", "Emma", "Dune"]),
    ],
)
async def test_sort_orders_by_whitelisted_columns(
    api: Client, books: None, query: str, expected: list[str]
) -> None:
    assert await titles(api, query) == expected


async def test_list_rows_and_cursor_come_from_one_snapshot_while_writers_commit(
    api: Client, db_url: str
) -> None:
    """Every row listed is a change the cursor saw; every insert it did not see is absent."""
    stop = asyncio.Event()

    async def writer(name: str) -> int:
        written = 0
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            while not stop.is_set():
                async with conn.transaction():
                    await conn.execute("INSERT INTO books (title, owner) VALUES (%s, 'w')", (name,))
                    await conn.execute("INSERT INTO books (title, owner) VALUES (%s, 'w')", (name,))
                written += 2
        return written

    writers = [asyncio.create_task(writer(f"w{i}")) for i in range(3)]
    pages = []
    try:
        async with asyncio.timeout(60):
            for _ in range(15):
                pages.append(await (await api.get("/api/books?limit=100&sort=-id")).json())
    finally:
        stop.set()
        async with asyncio.timeout(30):
            written = sum(await asyncio.gather(*writers))
    assert written > 0
    with psycopg.connect(db_url) as check:
        for page in pages:
            visible = check.execute(
                "SELECT (pk->>'id')::int FROM rowcast.changes "
                "WHERE table_name = 'books' AND op = 'insert' AND pg_visible_in_snapshot(xid, %s::pg_snapshot) "
                "ORDER BY 1 DESC",
                (page["cursor"],),
            ).fetchall()
            ids = [row[0] for row in visible]
            assert page["total"] == len(ids)
            assert [b["id"] for b in page["items"]] == ids[:100]
    assert len({p["cursor"] for p in pages}) > 1  # the writers really were committing in between
