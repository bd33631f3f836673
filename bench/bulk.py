"""Bulk statements on a plain table vs a captured one: what capture costs a big write.

    python -m bench.bulk            # 100,000-row INSERT ... SELECT and COPY, 50,000-row UPDATE, DELETE; x3
    python -m bench.bulk --quick    # 10,000 rows, once

A fresh embedded Postgres (durable commits). Each statement runs in its own transaction on a
plain table and on a captured twin, per wake-up mode, best of the repeats; "ratio" is plain
time / captured time (1.0 = capture is free). Two captured twins: one per statement
(rowcast.capture_per_statement: INSERT and DELETE logged from the transition table, UPDATE by
the row trigger; capture_v4.sql says why), one per row (the default).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import psycopg

from bench import common
from bench.common import Database

Conn = psycopg.Connection[tuple[Any, ...]]
COLUMNS = "id bigint PRIMARY KEY, a integer NOT NULL, b text NOT NULL, c timestamptz NOT NULL DEFAULT now()"
TABLES = {"plain": "bulk_plain", "per statement": "bulk_statement", "per row": "bulk_row"}


def prepare(db: Database) -> None:
    for table in TABLES.values():
        db.execute(f"CREATE TABLE {table} ({COLUMNS})")
    db.execute("SELECT rowcast.enable_capture('bulk_statement'), rowcast.enable_capture('bulk_row')")
    db.execute("SELECT rowcast.capture_per_statement('bulk_statement')")


def statements(rows: int) -> dict[str, Callable[[Conn, str], None]]:
    def insert_select(conn: Conn, table: str) -> None:
        conn.execute(
            f"INSERT INTO {table} (id, a, b) SELECT g, g, 'bulk row ' || g FROM generate_series(1, {rows}) g"
        )

    def copy(conn: Conn, table: str) -> None:
        with conn.cursor().copy(f"COPY {table} (id, a, b) FROM STDIN") as out:
            for i in range(rows + 1, 2 * rows + 1):
                out.write_row((i, i, f"copied row {i}"))

    def update(conn: Conn, table: str) -> None:
        conn.execute(f"UPDATE {table} SET a = a + 1 WHERE id <= {rows // 2}")

    def delete(conn: Conn, table: str) -> None:
        conn.execute(f"DELETE FROM {table}")

    return {
        f"INSERT ... SELECT {rows:,}": insert_select,
        f"COPY {rows:,}": copy,
        f"UPDATE {rows // 2:,}": update,
        f"DELETE {2 * rows:,}": delete,
    }


def run_once(url: str, rows: int) -> dict[tuple[str, str], float]:
    """Seconds per (statement, table kind), each statement in its own transaction."""
    times: dict[tuple[str, str], float] = {}
    with psycopg.connect(url) as conn:
        for kind, table in TABLES.items():
            for name, statement in statements(rows).items():
                start = time.perf_counter()
                with conn.transaction():
                    statement(conn, table)
                times[(name, kind)] = time.perf_counter() - start
            conn.execute("DELETE FROM rowcast.changes")
            conn.commit()
    return times


def table(results: dict[str, dict[tuple[str, str], float]], rows: int) -> str:
    lines = [
        "| wake-up mode | statement | plain s | captured per statement s | ratio | captured per row s | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, best in results.items():
        for name in statements(rows):
            plain, flat, parted = (best[(name, k)] for k in TABLES)
            lines.append(
                f"| {mode} | {name} | {plain:.3f} | {flat:.3f} | {plain / flat:.2f} | {parted:.3f} | {plain / parted:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="10,000 rows, one repeat")
    p.add_argument("--rows", type=int, help="rows per INSERT/COPY (default 100,000)")
    p.add_argument("--repeats", type=int, help="best of this many runs (default 3)")
    p.add_argument("--name", default="bulk", help="result file name under bench/results/")
    args = p.parse_args()
    rows = args.rows or (10_000 if args.quick else 100_000)
    repeats = args.repeats or (1 if args.quick else 3)
    meta = common.machine()
    results: dict[str, dict[tuple[str, str], float]] = {}
    with common.database() as db:
        prepare(db)
        for mode in ("notify", "coalesced"):
            why = common.set_wake_mode(db.url, mode)
            if why is not None:
                print(f"{mode}: skipped ({why})")
                continue
            runs = [run_once(db.url, rows) for _ in range(repeats)]
            results[mode] = {key: min(run[key] for run in runs) for key in runs[0]}
    meta["loadavg_after"] = common.loadavg()
    text = (
        f"{table(results, rows)}\n\nbest of {repeats}; load average {meta['loadavg_before']} before, "
        f"{meta['loadavg_after']} after"
    )
    print(text)
    data = {
        "meta": meta,
        "rows": rows,
        "repeats": repeats,
        "results": {m: {f"{k[0]} / {k[1]}": v for k, v in r.items()} for m, r in results.items()},
    }
    common.write_results(args.name, data, text)


if __name__ == "__main__":
    main()
