"""Rows a window read examines while one transaction stays open, before and after.

    python -m bench.longtx               # 100 s at 50 changes/s, a read every 250 ms
    python -m bench.longtx --quick       # 10 s smoke run

One transaction writes a row (so it holds an xid) and stays open for the whole run while a writer
commits single-row inserts into a captured table. Every poll interval the same window is read
both ways, in the same REPEATABLE READ snapshot, with EXPLAIN ANALYZE:
- general form (what catch-ups and coalesced reads used before): `xid >= xmin(P) AND NOT
  pg_visible_in_snapshot(xid, P)`; the open transaction pins xmin(P), so the scan grows with
  every change committed since it began;
- window form (the notifier's read now): `xid = ANY(xip(P)) OR xid >= xmax(P)`.
"Rows examined" sums, over the plan's table scans, the rows returned plus those removed by a
filter or a recheck.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import psycopg

from bench import common

TABLE = "bench_longtx"
GENERAL = (
    "SELECT id, xid FROM rowcast.changes WHERE xid >= %(xmin)s::text::xid8 "
    "AND NOT pg_visible_in_snapshot(xid, %(p)s::pg_snapshot) ORDER BY id"
)
CHEAP = (
    "SELECT id, xid FROM rowcast.changes WHERE (xid = ANY(%(xip)s::text[]::xid8[]) "
    "OR xid >= %(xmax)s::text::xid8) AND pg_visible_in_snapshot(xid, %(s)s::pg_snapshot) ORDER BY id"
)


def examined(plan: dict[str, Any]) -> int:
    total = 0
    if "Relation Name" in plan:
        loops = plan.get("Actual Loops", 1)
        total += int(plan.get("Actual Rows", 0) * loops)
        total += int(plan.get("Rows Removed by Filter", 0)) + int(
            plan.get("Rows Removed by Index Recheck", 0)
        )
    for child in plan.get("Plans", []):
        total += examined(child)
    return total


def explain(conn: psycopg.Connection[Any], sql: str, params: dict[str, Any]) -> tuple[int, int, float]:
    row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()
    assert row is not None
    doc = row[0][0]
    plan = doc["Plan"]
    return examined(plan), int(plan.get("Actual Rows", 0)), float(doc["Execution Time"])


def write(url: str, rate: float, stop: threading.Event, written: list[int]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        start = time.monotonic()
        n = 0
        while not stop.is_set():
            conn.execute(f"INSERT INTO {TABLE} (v) VALUES (%s)", (n,))
            n += 1
            written[0] = n
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def run(args: argparse.Namespace) -> None:
    with common.database() as db:
        db.execute(f"CREATE TABLE {TABLE} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v int)")
        db.execute("SELECT rowcast.enable_capture(%s)", (TABLE,))
        # A log with history, so the planner reads it as it would in production (by index).
        db.execute(f"INSERT INTO {TABLE} (v) SELECT g FROM generate_series(1, %s) g", (args.prefill,))
        db.execute("ANALYZE rowcast.changes")
        info = common.machine(db.url)
        print(f"machine: {info['cores']} cores, loadavg {info['loadavg_before']}")
        holder = psycopg.connect(db.url)
        holder.execute(f"INSERT INTO {TABLE} (v) VALUES (-1)")  # holds an xid, stays open
        stop = threading.Event()
        written = [0]
        thread = threading.Thread(target=write, args=(db.url, args.rate, stop, written), daemon=True)
        samples: list[dict[str, Any]] = []
        with psycopg.connect(db.url, autocommit=True) as conn:
            p = conn.execute("SELECT pg_current_snapshot()::text").fetchone()[0]  # type: ignore[index]
            thread.start()
            began = time.monotonic()
            while (elapsed := time.monotonic() - began) < args.seconds:
                time.sleep(args.interval)
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    s = conn.execute("SELECT pg_current_snapshot()::text").fetchone()[0]  # type: ignore[index]
                    xmin, xmax, xip = p.split(":")
                    general = explain(conn, GENERAL, {"xmin": xmin, "p": p})
                    cheap = explain(
                        conn, CHEAP, {"xmax": xmax, "xip": [x for x in xip.split(",") if x], "s": s}
                    )
                p = s
                samples.append({"t": elapsed, "general": general, "cheap": cheap, "written": written[0]})
        stop.set()
        thread.join()
        holder.rollback()
        holder.close()
    info["loadavg_after"] = common.loadavg()
    rows = []
    step = max(1, len(samples) // 10)
    for sample in samples[step - 1 :: step]:
        g, c = sample["general"], sample["cheap"]
        rows.append(
            [f"{sample['t']:.0f}", f"{sample['written']:,}", f"{c[1]}", f"{g[0]:,}", f"{g[2]:.2f}",
             f"{c[0]:,}", f"{c[2]:.2f}"]
        )  # fmt: skip
    text = common.table(
        f"Rows examined per window read with one transaction open for {args.seconds:.0f} s while "
        f"{args.rate:g} changes/s commit (read every {args.interval * 1000:.0f} ms, {args.prefill:,} older "
        f"changes in the log; loadavg before "
        f"{info['loadavg_before']}, after {info['loadavg_after']})",
        [
            "t (s)",
            "committed",
            "rows read",
            "general: examined",
            "general: ms",
            "window: examined",
            "window: ms",
        ],
        rows,
    )
    worst_cheap = max(s["cheap"][0] for s in samples)
    last_general = samples[-1]["general"][0]
    text += (
        f"\nWindow form: at most {worst_cheap} rows examined per read throughout; general form: "
        f"{last_general:,} at the end (grows with every change since the open transaction began).\n"
    )
    common.write_results(args.name, {"machine": info, "options": vars(args), "samples": samples}, text)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10 s smoke run")
    p.add_argument("--seconds", type=float, default=100.0)
    p.add_argument("--rate", type=float, default=50.0, help="committed changes per second")
    p.add_argument("--interval", type=float, default=0.25, help="seconds between reads")
    p.add_argument("--prefill", type=int, default=100_000, help="changes in the log before the run")
    p.add_argument("--name", help="result file name under bench/results/")
    args = p.parse_args()
    if args.quick:
        args.seconds = 10.0
    args.name = args.name or ("longtx-quick" if args.quick else "longtx")
    run(args)


if __name__ == "__main__":
    main()
