"""Retention: prune the change log by age, from whichever notifier replica gets the lock."""

from __future__ import annotations

import asyncio
import logging

import psycopg
from rowcast.db import queries
from rowcast.notifier.replay import Pool

log = logging.getLogger("rowcast.notifier.retention")

async def prune_once(pool: Pool, retention: float) -> int | None:
    """Prune log rows older than `retention` seconds; None if another replica holds the lock."""
    async with pool.connection() as conn:
        done = await queries.prune_async(conn, retention)
    return None if done is None else done[0]


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
