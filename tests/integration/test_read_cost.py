"""What the notifier's reads cost Postgres: a read of a quiet log examines the window, not the log.

psycopg prepares a statement on the server after it has run five times, and Postgres then plans
it once for any parameters (a generic plan). Without the window's bounds the planner walks the log
in id order and filters every row: each poll read examined the whole log (about 18,000 rows per
read of a 20,000-row log). The notifier's connections plan every statement for its parameters.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from rowcast.notifier.app import create_app

from tests.servers import serve, settings_for, wait_healthy


def counters(db_url: str) -> tuple[int, int]:
    """(scans, rows examined) of rowcast.changes so far."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row: Any = conn.execute(
            "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0), "
            "coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
            "FROM pg_stat_user_tables WHERE schemaname = 'rowcast' AND relname = 'changes'"
        ).fetchone()
    return int(row[0]), int(row[1])


async def reads_of_a_quiet_log(db_url: str) -> tuple[int, float]:
    """A notifier polling every 100 ms over a quiet 20,000-row log: (reads in 4 s, rows examined
    per read), measured after 3 s (past the bulk insert, and past psycopg's prepare threshold)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO books (title) SELECT 'book ' || g FROM generate_series(1, 20000) g")
    async with serve(create_app(settings_for(db_url, poll_interval=0.1))) as base:
        await wait_healthy(base)
        await asyncio.sleep(3)
        scans, examined = await asyncio.to_thread(counters, db_url)
        await asyncio.sleep(4)
        scans_after, examined_after = await asyncio.to_thread(counters, db_url)
    reads = scans_after - scans
    return reads, (examined_after - examined) / max(reads, 1)


async def test_reads_of_a_quiet_log_examine_the_window_not_the_log(db_url: str) -> None:
    reads, per_read = await reads_of_a_quiet_log(db_url)
    assert reads >= 10, f"only {reads} reads of the log in 4 s at a 100 ms poll interval"
    assert per_read < 50, f"each read of a quiet 20,000-row log examined {per_read:.0f} rows"


async def test_a_busy_cluster_does_not_make_reads_walk_the_log(db_url: str) -> None:
    """Snapshots are cluster-wide: every transaction open anywhere on the server is in a window's
    xip list. With 24 open (here in this database; on PG 15 under the parallel suite, other
    workers' databases did it), the planner took `xid = ANY(xip)` for a sizeable share of the
    log and walked the primary key in id order to satisfy ORDER BY id LIMIT, filtering every
    row: 2,300-12,105 rows examined per read of a quiet 20,000-row log (9,429 in CI)."""
    holders = [await psycopg.AsyncConnection.connect(db_url) for _ in range(24)]
    try:
        for holder in holders:
            await holder.execute("SELECT pg_current_xact_id()")  # an xid, held open
        reads, per_read = await reads_of_a_quiet_log(db_url)
    finally:
        for holder in holders:
            await holder.close()
    assert reads >= 10, f"only {reads} reads of the log in 4 s at a 100 ms poll interval"
    assert per_read < 50, (
        f"with 24 transactions open, each read of a quiet 20,000-row log examined {per_read:.0f} rows"
    )
