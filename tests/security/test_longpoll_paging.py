"""Finding 3: long-poll pages sorted xids as text, so paging across 10^n skipped committed changes."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import psycopg

from tests.security.conftest import bearer, token
from tests.servers import Running

AConn = psycopg.AsyncConnection[tuple[Any, ...]]
XIDS = range(5, 16)  # 5..15: crosses 10, where "10" < "5" as text


async def _page(notifier: Running, tok: str, cursor: str, limit: int) -> dict[str, Any]:
    params = {"table": "books", "cursor": cursor, "limit": str(limit), "wait": "0"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(notifier.base + "/changes", params=params, headers=bearer(tok)) as resp,
    ):
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def test_paging_across_a_digit_boundary_of_xids_delivers_every_change_once(
    notifier: Running, aconn: AConn
) -> None:
    # Log rows with chosen small xids, two per "transaction", instead of burning real xids: as the
    # superuser, straight into the log (xid has a default, not an identity).
    await aconn.execute(
        'INSERT INTO rowcast.changes (xid, schema_name, table_name, op, pk, "row") '
        "SELECT x::text::xid8, 'public', 'books', 'insert', jsonb_build_object('id', x * 10 + n), "
        "jsonb_build_object('id', x * 10 + n, 'title', 'b' || x, 'owner', 'alice') "
        "FROM generate_series(%s::int, %s::int) x, generate_series(1, 2) n ORDER BY x, n",
        (XIDS[0], XIDS[-1]),
    )
    tok = token("alice", read=["books"])
    cursor, seen, more = "5:5:", [], True
    for _ in range(3 * len(XIDS)):  # every page delivers at least one transaction
        page = await _page(notifier, tok, cursor, limit=3)
        seen += [change["pk"]["id"] for change in page["changes"]]
        cursor, more = page["cursor"], page["more"]
        if not more:
            break
    assert not more
    expected = [x * 10 + n for x in XIDS for n in (1, 2)]
    assert sorted(seen) == expected, json.dumps(seen)  # each exactly once, none skipped
