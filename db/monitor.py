"""What an operator sees (`rowcast status`, the notifier's /status.json, the /status page).

One read of the database gives every fact: per captured table its recent changes per minute, its
rows and bytes in the log, its oldest change; the log's size, the wake-up mode, the last prune and
the NOTIFY queue; and every notifier's heartbeat row (rowcast.notifiers, written by each notifier
process every HEARTBEAT seconds). The CLI reads it with a plain connection, the notifier with its
pool: the queries and the shaping of the answer are shared here.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

HEARTBEAT = 2.0  # seconds between a notifier's heartbeat rows
# A notifier whose row has not moved for this long is shown as down; after KEEP_DOWN it is no
# longer shown, and rows older than FORGET are deleted by any running notifier.
DOWN_AFTER = 5 * HEARTBEAT
KEEP_DOWN = 600.0
FORGET = 3600.0
MINUTES = 15

OVERVIEW_SQL = """
SELECT (SELECT wake_mode FROM rowcast.config),
       pg_total_relation_size('rowcast.changes'),
       (SELECT pruned_at FROM rowcast.prune_state),
       pg_notification_queue_usage(),
       statement_timestamp()
"""
TABLES_SQL = "SELECT * FROM rowcast.table_activity(%s)"
NOTIFIERS_SQL = """
SELECT notifier_id, host, pid, started_at, seen_at,
       extract(epoch FROM statement_timestamp() - seen_at)::float8, stats
  FROM rowcast.notifiers
 WHERE seen_at > statement_timestamp() - make_interval(secs => %s)
 ORDER BY host, pid, notifier_id
"""


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def shape(
    overview: tuple[Any, ...],
    tables: list[tuple[Any, ...]],
    notifiers: list[tuple[Any, ...]],
    minutes: int,
    fallback_retention: float | None = None,
) -> dict[str, Any]:
    """The status document from the three queries' rows (pure)."""
    wake_mode, log_bytes, pruned_at, queue_usage, now = overview
    shown = []
    for notifier_id, host, pid, started_at, seen_at, seen_ago, stats in notifiers:
        alive = seen_ago is not None and seen_ago < DOWN_AFTER
        shown.append(
            {
                "id": notifier_id,
                "host": host,
                "pid": pid,
                "started_at": _iso(started_at),
                "seen_at": _iso(seen_at),
                "seen_ago_seconds": round(float(seen_ago), 3),
                "alive": alive,
                **(stats or {}),
            }
        )
    # Retention is each notifier's setting (ROWCAST_RETENTION): the shortest live one prunes first.
    retentions = [n["retention_seconds"] for n in shown if n["alive"] and n.get("retention_seconds")]
    retention = min(retentions) if retentions else fallback_retention
    out_tables = []
    for schema, table, per_minute, rows, nbytes, oldest, newest in tables:
        counts = [int(n) for n in per_minute]
        oldest_age = None if oldest is None else max((now - oldest).total_seconds(), 0.0)
        out_tables.append(
            {
                "table": f"{schema}.{table}",
                "schema": schema,
                "name": table,
                "per_minute": counts,
                # Over the last full minute (the last element covers the 60 s up to now).
                "changes_per_second": round(counts[-1] / 60, 3) if counts else 0.0,
                "log_rows": int(rows),
                "log_bytes": int(nbytes),
                "oldest_change": _iso(oldest),
                "oldest_age_seconds": None if oldest_age is None else round(oldest_age, 1),
                "newest_change": _iso(newest),
                "retention_seconds": retention,
                "wake_mode": wake_mode,
            }
        )
    return {
        "at": _iso(now),
        "minutes": minutes,
        "wake_mode": wake_mode,
        "log_total_bytes": int(log_bytes),
        "last_prune": _iso(pruned_at),
        "retention_seconds": retention,
        "notify_queue_usage": float(queue_usage),
        "tables": out_tables,
        "notifiers": shown,
    }


def collect(conn: Any, minutes: int = MINUTES, fallback_retention: float | None = None) -> dict[str, Any]:
    """The status document, read with a psycopg (sync) connection."""
    with conn.transaction():
        overview = conn.execute(OVERVIEW_SQL).fetchone()
        tables = conn.execute(TABLES_SQL, (minutes,)).fetchall()
        notifiers = conn.execute(NOTIFIERS_SQL, (KEEP_DOWN,)).fetchall()
    return shape(overview, tables, notifiers, minutes, fallback_retention)


async def acollect(
    conn: Any, minutes: int = MINUTES, fallback_retention: float | None = None
) -> dict[str, Any]:
    """The status document, read with a psycopg async connection."""
    async with conn.transaction():
        overview = await (await conn.execute(OVERVIEW_SQL)).fetchone()
        tables = await (await conn.execute(TABLES_SQL, (minutes,))).fetchall()
        notifiers = await (await conn.execute(NOTIFIERS_SQL, (KEEP_DOWN,))).fetchall()
    return shape(overview, tables, notifiers, minutes, fallback_retention)


# -- text rendering (rowcast status) ----------------------------------------------------------

BARS = "▁▂▃▄▅▆▇█"


def sparkline(counts: list[int]) -> str:
    top = max(counts, default=0)
    if top == 0:
        return BARS[0] * len(counts)
    return "".join(BARS[min(len(BARS) - 1, math.ceil(n / top * (len(BARS) - 1)))] for n in counts)


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def human_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 10:
        return f"{s:.1f}s"
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    if s < 172800:
        return f"{s / 3600:.0f}h"
    return f"{s / 86400:.0f}d"


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}ms"


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]


def _when(iso: str | None) -> str:
    return "never" if iso is None else datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S%z")


def render(status: dict[str, Any]) -> str:
    retention = status["retention_seconds"]
    lines = [
        f"rowcast status at {_when(status['at'])}",
        f"wake-up mode {status['wake_mode']} · change log {human_bytes(status['log_total_bytes'])} · "
        f"retention {human_seconds(retention)} · last prune {_when(status['last_prune'])} · "
        f"NOTIFY queue {status['notify_queue_usage'] * 100:.1f}%",
        "",
    ]
    if status["tables"]:
        rows = [
            [
                t["table"],
                f"{t['changes_per_second']:.2f}",
                sparkline(t["per_minute"]),
                str(t["log_rows"]),
                human_bytes(t["log_bytes"]),
                "-" if t["oldest_age_seconds"] is None else human_seconds(t["oldest_age_seconds"]) + " ago",
                human_seconds(t["retention_seconds"]),
                t["wake_mode"],
            ]
            for t in status["tables"]
        ]
        header = [
            "TABLE",
            "CHANGES/S",
            f"LAST {status['minutes']} MIN",
            "LOG ROWS",
            "LOG SIZE",
            "OLDEST",
            "RETENTION",
            "WAKE",
        ]
        lines += _grid(header, rows)
    else:
        lines.append("no captured tables (rowcast capture enable TABLE)")
    lines.append("")
    if status["notifiers"]:
        rows = []
        for n in status["notifiers"]:
            if not n["alive"]:
                state = "down"
            elif n.get("listening") and n.get("reading"):
                state = "listening"
            else:
                state = "degraded"
            rows.append(
                [
                    n["id"],
                    state,
                    str(n.get("clients", "-")),
                    str(n.get("subscriptions", "-")),
                    _ms(n.get("lag_p50_ms")),
                    _ms(n.get("lag_p99_ms")),
                    "-" if n.get("notify_queue_usage") is None else f"{n['notify_queue_usage'] * 100:.1f}%",
                    human_seconds(n.get("last_read_age_seconds")) + " ago",
                    human_seconds(n["seen_ago_seconds"]) + " ago",
                ]
            )
        header = [
            "NOTIFIER",
            "STATE",
            "CLIENTS",
            "SUBS",
            "LAG P50",
            "LAG P99",
            "NOTIFY Q",
            "LAST READ",
            "SEEN",
        ]
        lines += _grid(header, rows)
    else:
        lines.append(
            "no notifier has reported in the last 10 minutes (is `rowcast up` or `rowcast notifier` running?)"
        )
    return "\n".join(lines)
