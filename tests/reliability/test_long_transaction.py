"""A transaction held open throughout: nothing lost, live latency unaffected, resume windows grow.

docs/DESIGN.md: "A long-running transaction anywhere holds X back: resume windows grow (more
duplicates to skip) but nothing is lost and live latency is unaffected." Measured here in two
phases, without and with such a transaction, each with a steady writer, a live probe subscriber
and a subscriber that keeps dropping its connection and resuming from its last checkpoint.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import psycopg
import pytest
from rowcast.notifier.app import create_app

from tests.reliability.clients import Feed
from tests.reliability.model import T_DDL, Snap, View
from tests.servers import serve, settings_for, wait_healthy, ws_connect

AConn = psycopg.AsyncConnection[tuple[Any, ...]]


@dataclass
class Phase:
    latencies: list[float] = field(default_factory=list)
    windows: list[int] = field(default_factory=list)  # already-seen changes each resume's replay scans
    duplicates: list[int] = field(default_factory=list)  # frames the per-row rule dropped, per resume
    resume_seconds: list[float] = field(default_factory=list)  # subscribe -> first checkpoint


@pytest.fixture
async def notifier(db_url: str, aconn: AConn) -> AsyncIterator[str]:
    for statement in T_DDL:
        await aconn.execute(statement)  # type: ignore[arg-type]
    async with serve(create_app(settings_for(db_url))) as base:
        await wait_healthy(base)
        yield base


async def write_steadily(url: str, stop: asyncio.Event) -> None:
    """Inserts and hot-row updates on books, about 150 changes a second."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        i = 0
        while not stop.is_set():
            i += 1
            await conn.execute("INSERT INTO books (title, num_pages) VALUES (%s, %s)", (f"s{i}", i % 900 + 1))
            await conn.execute(
                "UPDATE books SET num_pages = %s WHERE id = (SELECT min(id) FROM books)", (i % 900 + 1,)
            )
            await asyncio.sleep(0.01)


def is_change_of(pk: dict[str, Any], frame: dict[str, Any]) -> bool:
    return bool(frame["type"] == "change" and frame["pk"] == pk)


async def probe_latency(base: str, conn: AConn, phase: Phase, count: int) -> None:
    """Commit a row of t, time until a live subscriber has it."""
    async with ws_connect(base) as client:
        await client.subscribe(table="t")
        for n in range(count):
            key = int(time.monotonic() * 1e6)
            began = time.monotonic()
            await conn.execute("INSERT INTO t (id, n) VALUES (%s, %s)", (key, n))
            await client.until(partial(is_change_of, {"id": key}))
            phase.latencies.append(time.monotonic() - began)
            await asyncio.sleep(0.05)


async def resume_repeatedly(base: str, conn: AConn, feed: Feed, phase: Phase, rounds: int) -> None:
    for _ in range(rounds):
        assert feed.cursor is not None
        cursor = feed.cursor
        row = await (
            await conn.execute(
                "SELECT count(*) FROM rowcast.changes WHERE xid >= %s::text::xid8 "
                "AND pg_visible_in_snapshot(xid, %s::pg_snapshot)",
                (str(Snap.parse(cursor).xmin), cursor),
            )
        ).fetchone()
        assert row is not None
        phase.windows.append(int(row[0]))
        await asyncio.sleep(0.3)  # changes pile up while it is away (workload timing)
        dropped = feed.dropped
        began = time.monotonic()
        async with ws_connect(base) as client:
            await client.send(type="subscribe", ref="r", table="books", cursor=cursor)
            checkpointed = False
            async with asyncio.timeout(10):
                while not checkpointed or time.monotonic() - began < 0.5:
                    frame = await client.recv(10)
                    if frame["type"] == "change":
                        feed.take_raw(frame, 0)
                    elif frame["type"] == "checkpoint":
                        if not checkpointed:
                            phase.resume_seconds.append(time.monotonic() - began)
                        checkpointed = True
                        feed.cursor = frame["cursor"]
                    assert frame["type"] in ("subscribed", "change", "checkpoint"), frame
        phase.duplicates.append(feed.dropped - dropped)


async def run_phase(base: str, db_url: str, conn: AConn, feed: Feed) -> Phase:
    phase = Phase()
    stop = asyncio.Event()
    writer = asyncio.create_task(write_steadily(db_url, stop))
    try:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as probe:
            await asyncio.gather(
                probe_latency(base, probe, phase, 25), resume_repeatedly(base, conn, feed, phase, 6)
            )
    finally:
        stop.set()
        await writer
    return phase


@pytest.mark.timeout(120)
async def test_long_transaction_loses_nothing_keeps_latency_and_grows_resume_windows(
    notifier: str, db_url: str, aconn: AConn
) -> None:
    feed = Feed("resumer", View("books"))
    async with ws_connect(notifier) as first:
        feed.start = feed.cursor = (await first.subscribe(table="books"))["cursor"]
    before = await run_phase(notifier, db_url, aconn, feed)

    long = await psycopg.AsyncConnection.connect(db_url)
    await long.execute("INSERT INTO books (title, owner) VALUES ('held open', 'alice')")
    during = await run_phase(notifier, db_url, aconn, feed)
    async with ws_connect(notifier) as live:
        await live.subscribe(table="books", where={"title": {"eq": "held open"}})
        held_cursor = feed.cursor  # taken while the transaction was open: its xid is in flight there
        await long.commit()
        await long.close()
        late = await live.until(lambda f: f["type"] == "change")
    assert late["row"]["title"] == "held open"

    # A subscriber that was away when it committed gets it on resume, from a cursor of before.
    feed.cursor = held_cursor
    await resume_repeatedly(notifier, aconn, feed, Phase(), 1)
    logged = [
        r[0]
        for r in await (
            await aconn.execute("SELECT id FROM rowcast.changes WHERE table_name = 'books'")
        ).fetchall()
    ]
    assert feed.admitted_set == set(logged), "a change was lost"
    assert not feed.problems

    p50 = {name: statistics.median(p.latencies) for name, p in (("before", before), ("during", during))}
    p95 = {
        name: sorted(p.latencies)[int(len(p.latencies) * 0.95) - 1]
        for name, p in (("before", before), ("during", during))
    }
    print(
        f"live latency p50/p95 ms: before {p50['before'] * 1e3:.1f}/{p95['before'] * 1e3:.1f}, "
        f"during {p50['during'] * 1e3:.1f}/{p95['during'] * 1e3:.1f}\n"
        f"resume windows (already-seen changes scanned): before {before.windows}, during {during.windows}\n"
        f"duplicates dropped per resume: before {before.duplicates}, during {during.duplicates}\n"
        f"resume to first checkpoint ms: before {[round(s * 1e3) for s in before.resume_seconds]}, "
        f"during {[round(s * 1e3) for s in during.resume_seconds]}"
    )
    # Windows: flat without the transaction, growing with every resume while it is held open.
    assert max(before.windows) < 100
    assert (
        all(a < b for a, b in zip(during.windows, during.windows[1:], strict=False))
        and during.windows[-1] >= 50
    )
    # Latency: not a benchmark (2 shared cores), only "unaffected" within a generous bound.
    assert p95["during"] < max(0.5, 4 * p95["before"])
