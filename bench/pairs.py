"""rowcast against the Socket.IO relay, run after run: the medians of N alternating pairs.

    python -m bench.pairs                          # 3 pairs, 1,000 clients x 10 and 30 changes/s
    python -m bench.pairs --runs 5 --clients 1000 --rates 10 30
    python -m bench.pairs --quick                  # smoke: one pair, 100 clients x 10/s, 2 s

One `bench.fanout` run per pair (`--servers rowcast,socketio`, notify mode, every rate), so the two
servers share a machine state; single runs on this shared 2-core machine move by ±15% in CPU and
several ms in p99, which one side-by-side run cannot tell from a difference. Per point it prints
every run and the medians of server CPU per delivered frame (what `bench.fanout` reports: changes
and rowcast's checkpoints), server CPU per change message (checkpoints not counted as messages,
the relay's terms), p99, and the ratios to the relay with the targets' verdicts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from collections.abc import Sequence
from typing import Any

from bench import common, fanout
from bench.common import num

ROWCAST = "rowcast (notify)"


def per_change(r: dict[str, Any]) -> float:
    """Server CPU µs per change message: checkpoints and other frames cost, but do not count."""
    return float(r["cpu"]["server"]) / 100 / max(float(r["msgs_per_s"]), 1.0) * 1e6


def points(runs: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per (clients, rate) that both servers measured in every run: each run's numbers and medians."""
    keys = sorted({(r["clients"], r["target_rate"]) for run in runs for r in run})
    out = []
    for clients, rate in keys:
        pairs = []
        for run in runs:
            mine = fanout.find(run, ROWCAST, clients, rate)
            theirs = fanout.find(run, fanout.RELAY, clients, rate)
            if mine is None or theirs is None:
                continue
            pairs.append(
                {
                    "frame": (fanout.cpu_per_message(mine), fanout.cpu_per_message(theirs)),
                    "change": (per_change(mine), per_change(theirs)),
                    "p99": (mine["p99"] * 1e3, theirs["p99"] * 1e3),
                    "valid": mine["valid"] == theirs["valid"] == "yes",
                }
            )
        if not pairs:
            continue
        point: dict[str, Any] = {"clients": clients, "rate": rate, "pairs": pairs}
        for key in ("frame", "change", "p99"):
            point[key] = (
                statistics.median(p[key][0] for p in pairs),
                statistics.median(p[key][1] for p in pairs),
            )
            point[f"{key}_ratio"] = statistics.median(p[key][0] / max(p[key][1], 1e-9) for p in pairs)
        out.append(point)
    return out


def render(result: list[dict[str, Any]], title: str) -> str:
    def each(point: dict[str, Any], key: str, side: int) -> str:
        return " / ".join(f"{p[key][side]:.1f}" for p in point["pairs"])

    rows = [
        [
            f"{num(p['clients'])} x {p['rate']:g}/s",
            str(len(p["pairs"])) + ("" if all(q["valid"] for q in p["pairs"]) else " (some invalid)"),
            f"{each(p, 'frame', 0)} (median {p['frame'][0]:.1f})",
            f"{each(p, 'frame', 1)} (median {p['frame'][1]:.1f})",
            f"{p['frame_ratio']:.2f}x",
            f"{p['change'][0]:.1f} vs {p['change'][1]:.1f} ({p['change_ratio']:.2f}x)",
            f"{each(p, 'p99', 0)} (median {p['p99'][0]:.1f})",
            f"{each(p, 'p99', 1)} (median {p['p99'][1]:.1f})",
        ]
        for p in result
    ]
    text = common.table(
        title,
        [
            "point",
            "pairs",
            "rowcast µs/frame",
            "relay µs/frame",
            "median ratio",
            "µs per change message, medians",
            "rowcast p99 ms",
            "relay p99 ms",
        ],
        rows,
    )
    lines = ["", "Targets (issue 19), by the medians of the pairs:"]
    for p in result:
        at = f"{num(p['clients'])} x {p['rate']:g}/s"
        lines.append(
            f"- server CPU per delivered message ≤ the relay's, {at}: {p['frame_ratio']:.2f}x per frame, "
            f"{p['change_ratio']:.2f}x per change message: "
            f"{common.verdict(p['frame_ratio'] <= 1.0)} / {common.verdict(p['change_ratio'] <= 1.0)}"
        )
        lines.append(
            f"- p99 ≤ the relay's, {at}: {p['p99'][0]:.1f} vs {p['p99'][1]:.1f} ms: "
            f"{common.verdict(p['p99'][0] <= p['p99'][1])}"
        )
    print("\n".join(lines))
    return text + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke: one pair, 100 clients x 10/s, 2 s")
    p.add_argument("--runs", type=int, help="pairs (default 3)")
    p.add_argument("--clients", type=int, nargs="+", help="client counts (default 1000)")
    p.add_argument("--rates", type=float, nargs="+", help="changes/s (default 10 30)")
    p.add_argument("--duration", type=float, help="measured seconds per point (default 8)")
    p.add_argument("--name", help="result file name under bench/results/ (each run: <name>-<i>)")
    args = p.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    clients = args.clients or ([100] if args.quick else [1000])
    rates = args.rates or ([10.0] if args.quick else [10.0, 30.0])
    duration = args.duration or (2.0 if args.quick else 8.0)
    name = args.name or ("pairs-quick" if args.quick else "pairs")
    common.raise_nofile()
    common.handle_sigterm()
    loads = []
    results = []
    machine: dict[str, Any] = {}
    for i in range(1, runs + 1):
        fargs = fanout.parser().parse_args(
            ["--servers", "rowcast,socketio", "--modes", "notify", "--every-rate", "--name", f"{name}-{i}"]
            + ["--clients", *map(str, clients), "--rates", *map(str, rates), "--duration", str(duration)]
            + (["--drain", "1"] if args.quick else [])
        )
        loads.append(common.loadavg())
        asyncio.run(fanout.run(fargs))
        run = json.loads((common.RESULTS / f"{name}-{i}.json").read_text())
        results.append(run["results"])
        machine = machine or run["machine"]
    loads.append(common.loadavg())
    result = points(results)
    text = render(result, f"rowcast against the Socket.IO relay, {runs} alternating pairs (loadavg {' → '.join(loads)})")
    common.write_results(name, {"machine": machine, "runs": runs, "points": result}, text)


if __name__ == "__main__":
    main()
