"""Snapshot then changes: the list's cursor plus a subscription give exactly the table, live."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import aiohttp
import psycopg
from rowcast.notifier.snapshot import Snapshot

from rowcast.client import RowRule, subscribe
from rowcast.server import create_app
from tests.servers import serve, settings_for, wait_healthy, wait_until


async def churn(url: str, seed: int, rounds: int) -> None:
    """Inserts, updates and deletes of a shared set of rows, with commits out of id order."""
    rng = random.Random(seed)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        for i in range(rounds):
            async with conn.transaction():
                choice = rng.random()
                if choice < 0.5:
                    await conn.execute(
                        "INSERT INTO books (title, num_pages) VALUES (%s, %s)", (f"s{seed}-{i}", i + 1)
                    )
                elif choice < 0.85:
                    await conn.execute(
                        "UPDATE books SET num_pages = num_pages + 1 WHERE id = (SELECT id FROM books ORDER BY random() LIMIT 1)"
                    )
                else:
                    await conn.execute(
                        "DELETE FROM books WHERE id = (SELECT id FROM books ORDER BY random() LIMIT 1)"
                    )
                await asyncio.sleep(rng.uniform(0, 0.01))


async def test_list_cursor_then_subscription_sees_exactly_the_changes_after_the_listed_state(
    db_url: str,
) -> None:
    async with serve(create_app(settings_for(db_url))) as base:
        await wait_healthy(base)
        writers = asyncio.gather(*(churn(db_url, seed, 60) for seed in range(3)))
        await asyncio.sleep(0.2)  # the list is taken while writers are busy
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{base}/api/books", params={"limit": 500}) as resp,
        ):
            listed = await resp.json()
        table: dict[int, dict[str, Any]] = {row["id"]: row for row in listed["items"]}
        received: list[int] = []

        async def follow() -> None:
            async for change in subscribe(base, "books", cursor=listed["cursor"], rule=RowRule()):
                received.append(change.id)
                key = change.pk["id"] if change.pk else None
                if change.op == "delete":
                    table.pop(key, None)
                elif change.row is not None:
                    table[key] = change.row

        follower = asyncio.create_task(follow())
        await writers

        async def matches() -> bool:
            async with await psycopg.AsyncConnection.connect(db_url) as conn:
                rows = await (await conn.execute("SELECT id, num_pages, version FROM books")).fetchall()
            truth = {r[0]: (r[1], r[2]) for r in rows}
            return truth == {k: (v["num_pages"], v["version"]) for k, v in table.items()}

        await wait_until(matches, timeout=10, interval=0.1)
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    snapshot = Snapshot.parse(listed["cursor"])
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        log = await (await conn.execute("SELECT id, xid::text FROM rowcast.changes ORDER BY id")).fetchall()
    unseen = [change_id for change_id, xid in log if not snapshot.visible(int(xid))]
    # Exactly the changes after the listed state: none the list already showed, none missing, none twice.
    assert sorted(received) == unseen
    assert 0 < len(unseen) < len(log)
