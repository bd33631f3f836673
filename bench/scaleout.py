"""Notifier replicas x clients on the same load, clients split evenly across the replicas.

    python -m bench.scaleout            # 1,000 clients, 10, 30, 100 changes/s (every rate is run)
    python -m bench.scaleout --clients 500 1000 2000 --rates 10 --processes 1 2 3
    python -m bench.scaleout --quick

Besides the fan-out columns, each configuration reports what it costs Postgres: the backends the
notifiers hold (LISTEN connections and pool) and the change-log rows they read per change
written (every replica reads every change itself, so this grows with the replicas).

Every notifier process holds its own LISTEN connection and fans out to its own clients, so a
second process adds a core's worth of fan-out — when there is a free core. Postgres pays one more
listener per process (each notification is read once per listening backend).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

import psycopg

from bench import common, fanout


async def run(args: argparse.Namespace) -> None:
    opts = fanout.Options(args.duration, args.warmup, args.drain, args.client_procs)
    results: list[dict[str, Any]] = []
    with common.database() as db:
        fanout.prepare(db)
        info = common.machine(db.url)
        problem = common.set_wake_mode(db.url, args.mode)
        if problem:
            raise SystemExit(f"wake mode {args.mode}: {problem}")
        costs: dict[str, dict[str, float]] = {}
        for processes in args.processes:
            servers = [common.notifier(db, name=f"notifier-{i}") for i in range(processes)]
            label = f"{processes} notifier{'s' if processes > 1 else ''}"
            with common.running(*servers):
                before = postgres_costs(db.url)
                # Every rate, past the 100 ms line too: the comparison is the point here.
                results += await fanout.series(
                    label, servers, db, "rowcast", args.clients, args.rates, opts, stop=False
                )
                after = postgres_costs(db.url)
            written = after["changes"] - before["changes"]
            costs[label] = {
                "backends": before["backends"],
                "rows_read_per_change": (after["rows_read"] - before["rows_read"]) / max(written, 1),
                "log_reads_per_s": (after["reads"] - before["reads"]) / max(after["at"] - before["at"], 1e-9),
            }
        common.set_wake_mode(db.url, "notify")
    info["loadavg_after"] = common.loadavg()
    text = common.table(
        f"Scale-out, {'/'.join(f'{c:,}' for c in args.clients)} clients split over the processes, wake mode {args.mode} "
        f"(loadavg before {info['loadavg_before']}, after {info['loadavg_after']}; {info['cores']} cores)",
        fanout.HEADERS,
        [fanout.row(r["server"], r) for r in results],
    )
    lines = ["", "What the notifiers cost Postgres (whole run of each configuration):", ""]
    lines += [
        "| server | notifier backends | log rows read per change written | log reads/s |",
        "|---|---|---|---|",
    ]
    for label, cost in costs.items():
        lines.append(
            f"| {label} | {cost['backends']:.0f} | {cost['rows_read_per_change']:.2f} | {cost['log_reads_per_s']:.1f} |"
        )
    lines += ["", "Per rate, 2 processes vs 1 (delivered msg/s, p99, server CPU in all):"]
    for clients in args.clients:
        for rate in args.rates:
            one = fanout.find(results, "1 notifier", clients, rate)
            two = fanout.find(results, "2 notifiers", clients, rate)
            if one and two:
                lines.append(
                    f"- {clients:,} clients, {rate:g} changes/s: {one['msgs_per_s']:,.0f} -> {two['msgs_per_s']:,.0f} msg/s "
                    f"({two['msgs_per_s'] / max(one['msgs_per_s'], 1):.2f}x), p99 {common.ms(one['p99'])} -> "
                    f"{common.ms(two['p99'])} ms, server CPU {one['cpu']['server']}% -> {two['cpu']['server']}%"
                )
    lines += ["", "Best delivered msg/s with p99 ≤ 100 ms:"]
    for processes in args.processes:
        label = f"{processes} notifier{'s' if processes > 1 else ''}"
        lines.append(f"- {label}: {fanout.best_throughput(results, label):,.0f}")
    text += "\n".join(lines) + "\n"
    print("\n".join(lines))
    common.write_results(args.name, {"machine": info, "options": vars(args), "results": results}, text)
    fanout.plot(results, args.name)


def postgres_costs(url: str) -> dict[str, float]:
    """Backends the notifiers hold, and the change log's counters (rows read, scans, rows
    written), so that a run's deltas say what the replicas cost the primary."""
    with psycopg.connect(url, autocommit=True) as conn:
        backends = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name IN ('rowcast-notifier', 'rowcast-listener')"
        ).fetchone()
        conn.execute("SELECT pg_stat_clear_snapshot()")
        stats = conn.execute(
            "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0), coalesce(seq_scan, 0) + coalesce(idx_scan, 0), "
            "n_tup_ins FROM pg_stat_user_tables WHERE schemaname = 'rowcast' AND relname = 'changes'"
        ).fetchone()
    assert backends is not None and stats is not None
    return {
        "backends": float(backends[0]),
        "rows_read": float(stats[0]),
        "reads": float(stats[1]),
        "changes": float(stats[2]),
        "at": time.monotonic(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--clients", type=int, nargs="+", help="clients in all, one run each (default 1000)")
    p.add_argument("--rates", type=float, nargs="+", help="changes/s (default 10 30 100)")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--mode", choices=["notify", "coalesced"], default="notify")
    p.add_argument("--duration", type=float)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--drain", type=float, default=5.0)
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument("--name")
    args = p.parse_args()
    args.clients = args.clients or ([200] if args.quick else [1000])
    args.rates = args.rates or ([30, 100] if args.quick else [10, 30, 100])
    args.duration = args.duration or (2.0 if args.quick else 8.0)
    args.name = args.name or ("scaleout-quick" if args.quick else "scaleout")
    common.raise_nofile()
    common.handle_sigterm()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
