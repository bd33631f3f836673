"""Finding 7: long-poll cut pages by transaction before the scope check, so a scoped user's empty
pages with `more: true` and their cursors told the count and xids of other users' transactions."""

from __future__ import annotations

from typing import Any

import aiohttp
import psycopg

from tests.security.conftest import TOKEN_ENV, bearer, token
from tests.servers import Running, rowcast_server

AConn = psycopg.AsyncConnection[tuple[Any, ...]]
BOB_TRANSACTIONS = 30


async def _page(base: str, tok: str, cursor: str, limit: int) -> dict[str, Any]:
    params = {"table": "books", "cursor": cursor, "limit": str(limit), "wait": "0"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(base + "/changes", params=params, headers=bearer(tok)) as resp,
    ):
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def _pages(base: str, tok: str, cursor: str, limit: int) -> list[dict[str, Any]]:
    """Every page from `cursor` until one says nothing more is waiting."""
    pages: list[dict[str, Any]] = []
    while not pages or pages[-1]["more"]:
        assert len(pages) < 100, "paging does not end"
        pages.append(await _page(base, tok, pages[-1]["cursor"] if pages else cursor, limit))
    return pages


async def _bob_busy_alice_a_little(aconn: AConn) -> str:
    """A cursor, then bob's transactions (one row each) with three of alice's among them."""
    row = await (await aconn.execute("SELECT pg_current_snapshot()::text")).fetchone()
    assert row is not None
    for n in range(BOB_TRANSACTIONS):
        await aconn.execute("INSERT INTO books (title, owner) VALUES (%s, 'bob')", (f"bob {n}",))
        if n % 10 == 9:
            await aconn.execute("INSERT INTO books (title, owner) VALUES (%s, 'alice')", (f"alice {n}",))
    return str(row[0])


def _titles(pages: list[dict[str, Any]]) -> list[str]:
    return [change["row"]["title"] for page in pages for change in page["changes"]]


async def test_a_scoped_long_poll_never_pages_on_other_users_transactions(
    notifier: Running, aconn: AConn
) -> None:
    cursor = await _bob_busy_alice_a_little(aconn)
    alice = token("alice", read=["books"], scopes=["books.owner=alice"])
    pages = await _pages(notifier.base, alice, cursor, limit=1)
    for page in pages:
        assert page["changes"] or not page["more"], pages  # no empty page that says "more"
    assert _titles(pages) == ["alice 9", "alice 19", "alice 29"]  # hers, each once, in order
    assert len(pages) == 3  # one per limit=1 page: bob's 30 transactions never made a page

    bob = token("bob", read=["books"], scopes=["books.owner=bob"])
    pages = await _pages(notifier.base, bob, cursor, limit=7)
    assert all(len(page["changes"]) <= 7 for page in pages)
    assert _titles(pages) == [f"bob {n}" for n in range(BOB_TRANSACTIONS)]


async def test_only_the_scan_budget_ends_an_empty_page_with_more(db_url: str, aconn: AConn) -> None:
    cursor = await _bob_busy_alice_a_little(aconn)
    env = {**TOKEN_ENV, "ROWCAST_LONGPOLL_SCAN_BUDGET": "5"}
    async with rowcast_server("notifier", db_url, env) as server:
        alice = token("alice", read=["books"], scopes=["books.owner=alice"])
        pages = await _pages(server.base, alice, cursor, limit=10)
    assert not pages[0]["changes"] and pages[0]["more"]  # 5 log rows read, all bob's: ask again
    assert _titles(pages) == ["alice 9", "alice 19", "alice 29"]
    assert "bob" not in str(pages)
