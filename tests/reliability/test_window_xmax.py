"""Found by the reliability suite (short profiles, e.g. ROWCAST_SEED=101 and 202): gaps in mode-all feeds.

The listener's window read used to take the changes `id > hwm OR xid = ANY(xip(P))`. A snapshot's
xip only lists running transactions below its xmax (the latest completed xid + 1); a transaction
with a higher xid that was already running at P, and whose change got a lower id than a change P
sees, is in neither set, so its change was never published live. The read is now
`xid = ANY(xip(P)) OR xid >= xmax(P)` (notifier/source.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from rowcast.notifier.app import create_app

from tests.servers import serve, settings_for, wait_healthy, ws_connect

AConn = psycopg.AsyncConnection[tuple[Any, ...]]


async def test_change_of_a_younger_running_transaction_with_an_older_id_is_delivered(db_url: str) -> None:
    async with (
        serve(create_app(settings_for(db_url))) as base,
        await psycopg.AsyncConnection.connect(db_url) as older,
        await psycopg.AsyncConnection.connect(db_url) as younger,
    ):
        await wait_healthy(base)
        async with ws_connect(base) as client:
            await client.subscribe(table="books")
            await older.execute("SELECT pg_current_xact_id()")  # xid n
            await younger.execute("SELECT pg_current_xact_id()")  # xid n+1
            cur = await younger.execute(
                "INSERT INTO books (title, owner) VALUES ('younger, first id', 'alice') RETURNING id"
            )
            row = await cur.fetchone()
            assert row is not None
            first_id = row[0]
            await older.execute("INSERT INTO books (title, owner) VALUES ('older, second id', 'alice')")
            await older.commit()  # latest completed xid n: a snapshot now has xmax n+1, xip {}
            await asyncio.sleep(0.5)  # the notifier reads a window P that sees the second id
            await younger.commit()
            seen: set[int] = set()

            def got(frame: dict[str, Any]) -> bool:
                if frame["type"] == "change":
                    seen.add(frame["id"])
                return first_id in seen

            try:
                await client.until(got, timeout=3.0)
            except TimeoutError:
                raise AssertionError(f"change {first_id} never arrived (got {sorted(seen)})") from None
