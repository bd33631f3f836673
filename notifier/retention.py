"""Retention: prune the change log by age, from whichever notifier replica gets the lock."""

from __future__ import annotations

import asyncio
import logging

import psycopg
from rowcast.notifier.replay import Pool

log = logging.getLogger("rowcast.notifier.retention")

# pg_try_advisory_xact_lock key: one replica prunes at a time, the others skip that round.
LOCK_KEY = 0x726F7763  # 'rowc'


async def prune_once(pool: Pool, retention: float) -> int | None:
    """Prune log rows older than `retention` seconds; None if another replica holds the lock."""
    async with pool.connection() as conn, conn.transaction():
        locked = await (await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (LOCK_KEY,))).fetchone()
        if not locked or not locked[0]:
            return None
        row = await (
            await conn.execute("SELECT removed FROM rowcast.prune(make_interval(secs => %s))", (retention,))
        ).fetchone()
    return int(row[0] or 0) if row else 0


async def prune_forever(pool: Pool, retention: float, every: float = 300.0) -> None:
    """Prune every `every` seconds; stop (with one clear log line) if this role may not prune."""
    while True:
        await asyncio.sleep(every)
        try:
            removed = await prune_once(pool, retention)
        except psycopg.errors.InsufficientPrivilege:
            log.info("this role may not prune the change log: schedule `rowcast prune` (e.g. from cron)")
            return
        except psycopg.Error as exc:
            log.warning("pruning the change log failed: %s", exc)
            continue
        if removed:
            log.info("pruned %d change(s) older than %.0fs", removed, retention)
