"""Commit-to-client latency, delivered messages/s and server CPU per message, side by side.

    python -m bench.fanout            # full: 100, 1,000, 5,000 clients x 10 ... 1,000 changes/s
    python -m bench.fanout --quick    # smoke run, about a minute
    python -m bench.fanout --servers rowcast,socketio --clients 1000 --rates 10 30

Servers (`--servers`, default all three, run one after the other on the same Postgres):
`rowcast` (`rowcast notifier`, once per `--modes` wake mode), `floor` (bench/baseline_server.py,
aiohttp + psycopg, the least a Python fan-out can do) and `socketio` (bench/socketio/relay.js,
Node + `pg` + Socket.IO 4: what a Node developer would write instead). The floor and the relay
get their payloads from a plain `pg_notify(channel, row_to_json(NEW)::text)` trigger that exists
only during their runs; rowcast reads its own change log as always.

Processes (the honest harness): the orchestrator (this one: it only paces, polls and reads CPU
counters), the writers (`bench.writer`, their own process: each row's `sent` is taken just before
its INSERT, commit latency reported), the server under test, Postgres, and load generators
(`bench.loadgen`; how many: `loadgen_procs`). Clients subtract `sent` on receipt (one machine,
one clock). Each load generator's CPU is measured over the point; a point where one passed
LOADGEN_LIMIT % of a core is marked invalid (`valid` column): the load generator, not the
server, may have set its latency.

A series (one server, one client count) stops at the first rate whose p99 passes 100 ms or that
loses or drops clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psutil
from psycopg import sql

from bench import common
from bench.common import Child, Cpu, Database, Loadgen, Server, hist_percentile, ms, num
from bench.harness import LOADGEN_LIMIT, SERVERS, loadgen_procs, quotable, servers_arg, validity

TABLE = "bench_fanout"
P99_LIMIT = 0.100
CHANNEL = "bench_rows"  # the plain trigger's channel, for the floor and the relay
FLOOR = "aiohttp floor"
RELAY = "socket.io relay"


def prepare(db: Database, table: str = TABLE) -> None:
    db.execute(
        f"CREATE TABLE {table} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "pad text NOT NULL, sent double precision NOT NULL)"
    )
    db.execute("SELECT rowcast.enable_capture(%s)", (table,))


@contextlib.contextmanager
def row_notify(db: Database, table: str = TABLE, channel: str = CHANNEL) -> Iterator[None]:
    """While inside: every INSERT on `table` also NOTIFYs `channel` with the row as JSON.

    What the floor and the Socket.IO relay broadcast (rowcast's own NOTIFY is a data-free
    doorbell). Dropped on exit so rowcast's runs pay nothing for it.
    """
    db.execute(
        "CREATE OR REPLACE FUNCTION bench_row_notify() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN PERFORM pg_notify(TG_ARGV[0], row_to_json(NEW)::text); RETURN NULL; END $$"
    )
    trigger = sql.SQL(
        "CREATE TRIGGER bench_row_notify AFTER INSERT ON {} FOR EACH ROW EXECUTE FUNCTION bench_row_notify({})"
    ).format(sql.Identifier(table), sql.Literal(channel))
    db.execute(trigger)
    try:
        yield
    finally:
        db.execute(sql.SQL("DROP TRIGGER IF EXISTS bench_row_notify ON {}").format(sql.Identifier(table)))


class Writer(Child):
    """The paced writers, in their own process (`bench.writer`)."""

    def __init__(self, url: str, connections: int = 8, table: str = TABLE) -> None:
        super().__init__(
            [
                sys.executable,
                "-m",
                "bench.writer",
                "--database-url",
                url,
                "--connections",
                str(connections),
                "--table",
                table,
            ]
        )

    async def open(self) -> None:
        await self.start(seconds=60)

    async def close(self) -> None:
        await self.stop()

    async def run(self, rate: float, start: float, t0: float, t1: float) -> dict[str, Any]:
        """Write at `rate` from `start` until `t1`; counts the rows stamped inside [t0, t1)."""
        wait = t1 - time.time() + 60
        return await self.ask(seconds=wait, cmd="run", rate=rate, start=start, t0=t0, t1=t1)


@dataclass
class Options:
    duration: float
    warmup: float
    drain: float
    client_procs: int | None  # None: loadgen_procs decides


class Clients:
    """Load generators holding `count` clients spread over the servers' URLs."""

    def __init__(
        self, urls: Sequence[str], count: int, protocol: str, procs: int, table: str = TABLE
    ) -> None:
        self.count = count
        self.gens = [Loadgen(urls, n, protocol, table) for n in common.split(count, procs)]

    async def __aenter__(self) -> Clients:
        started = time.monotonic()
        try:
            ready = await asyncio.gather(*(g.start() for g in self.gens))
        except BaseException:
            await self.__aexit__()
            raise
        self.connected = sum(r["connected"] for r in ready)
        self.connect_seconds = time.monotonic() - started
        failed: Counter[str] = Counter()
        for r in ready:
            failed.update(r["closed"])
        if failed:
            print(f"  warning: {sum(failed.values())} client(s) failed to connect: {dict(failed)}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(g.stop() for g in self.gens), return_exceptions=True)

    async def ask(self, **cmd: Any) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(g.ask(**cmd) for g in self.gens)))

    def pids(self) -> list[int]:
        return [g.pid for g in self.gens]


async def measure(
    clients: Clients, writer: Writer, servers: Sequence[Server], db: Database, rate: float, opts: Options
) -> dict[str, Any]:
    """One point: write at `rate` for warm-up + duration, wait for delivery, gather latencies."""
    start = time.time()
    t0 = start + opts.warmup
    t1 = t0 + opts.duration
    await clients.ask(cmd="window", t0=t0, t1=t1)
    groups: dict[str, Callable[[], list[int]]] = {
        "server": lambda: [pid for s in servers for pid in server_pids(s)],
        "clients": clients.pids,
        "postgres": db.pids,
        "writer": lambda: [writer.pid],
    }
    for i, pid in enumerate(clients.pids()):
        groups[f"loadgen{i}"] = constant([pid])  # each load generator on its own: the 80 % rule
    cpu = Cpu(groups)
    write = asyncio.create_task(writer.run(rate, start, t0, t1))
    await asyncio.sleep(max(0.0, t0 - time.time()))
    cpu.begin()
    wrote = await write
    expected = wrote["written"] * clients.connected
    deadline = time.monotonic() + opts.drain
    while time.monotonic() < deadline:
        counts = await clients.ask(cmd="count")
        if sum(c["received"] for c in counts) >= expected:
            break
        await asyncio.sleep(0.1)
    usage = cpu.end()
    reports = await clients.ask(cmd="report", seconds=120)
    hist: Counter[int] = Counter()
    closed: Counter[str] = Counter()
    for r in reports:
        hist.update({int(k): v for k, v in r["hist"].items()})
        closed.update(r["closed"])
    received = sum(r["received"] for r in reports)
    other = sum(r["other"] for r in reports)
    last = max((r["last"] for r in reports if r["last"]), default=0.0)
    maxima = [r["max"] for r in reports if r["max"] is not None]
    span = max(last - t0, opts.duration) if last else opts.duration
    result = {
        "clients": clients.connected,
        "target_rate": rate,
        "write_rate": wrote["rate"],
        "written": wrote["written"],
        "commit_p50": wrote["commit_p50"],
        "commit_p99": wrote["commit_p99"],
        "expected": expected,
        "received": received,
        "complete": received / expected if expected else 0.0,
        "msgs_per_s": received / span,
        # Frames that are not changes (checkpoints, pongs), per client per second.
        "other_per_client_s": other / span / max(clients.connected, 1),
        "p50": hist_percentile(hist, 50),
        "p99": hist_percentile(hist, 99),
        "max": max(maxima, default=float("nan")),
        "closed": dict(closed),
        "cpu": usage,
        "loadgen_cpu": [usage[f"loadgen{i}"] for i in range(len(clients.pids()))],
    }
    result["loadgen_max"] = max(result["loadgen_cpu"], default=0)
    result["valid"] = validity(result["loadgen_cpu"])
    result["ok"] = bool(result["p99"] <= P99_LIMIT and result["complete"] >= 0.99 and not closed)
    return result


def constant(pids: list[int]) -> Callable[[], list[int]]:
    return lambda: pids


def server_pids(server: Server) -> list[int]:
    """The server process and its children: a relay or a supervisor may fork."""
    try:
        return [server.pid, *(c.pid for c in psutil.Process(server.pid).children(recursive=True))]
    except psutil.Error:
        return [server.pid]


def cpu_per_message(r: dict[str, Any]) -> float:
    """Server CPU time per delivered frame (changes and others), in µs: cost, whatever the load."""
    frames = float(r["msgs_per_s"] + r.get("other_per_client_s", 0.0) * r["clients"])
    return float(r["cpu"]["server"]) / 100 / max(frames, 1) * 1e6


def row(label: str, r: dict[str, Any]) -> list[str]:
    cpu = r["cpu"]
    return [
        label,
        num(r["clients"]),
        num(r["target_rate"]),
        num(r["write_rate"]),
        ms(r["commit_p50"]),
        num(r["msgs_per_s"]),
        ms(r["p50"]),
        ms(r["p99"]),
        ms(r["max"]),
        f"{100 * r['complete']:.1f}",
        num(r.get("other_per_client_s"), 1),
        "/".join(num(cpu.get(k)) for k in ("server", "clients", "postgres", "writer")),
        num(cpu_per_message(r), 1),
        num(r.get("loadgen_max")) + f" ({len(r.get('loadgen_cpu', []))})",
        "ok" if r["ok"] else "over",
        r.get("valid", "-"),
    ]


HEADERS = [
    "server",
    "clients",
    "changes/s",
    "written/s",
    "commit p50 ms",
    "delivered msg/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "complete %",
    "other frames/client/s",
    "CPU% srv/loadgens/pg/writer",
    "srv CPU µs/msg",
    "loadgen max CPU% (procs)",
    "p99≤100ms",
    "valid",
]


async def series(
    label: str,
    servers: Sequence[Server],
    db: Database,
    protocol: str,
    client_counts: Sequence[int],
    rates: Sequence[float],
    opts: Options,
    stop: bool = True,
) -> list[dict[str, Any]]:
    """For each client count, raise the rate until p99 passes 100 ms (every rate if not `stop`)."""
    results: list[dict[str, Any]] = []
    writer = Writer(db.url)
    await writer.open()
    try:
        for count in client_counts:
            procs = opts.client_procs or loadgen_procs(count, max(rates))
            async with Clients([s.ws_url for s in servers], count, protocol, procs) as clients:
                print(f"  {label}: {clients.connected} clients connected in {clients.connect_seconds:.1f}s")
                for rate in rates:
                    r = await measure(clients, writer, servers, db, rate, opts)
                    r["server"] = label
                    results.append(r)
                    print("  " + " | ".join(row(label, r)), flush=True)
                    if stop and not r["ok"]:
                        break
    finally:
        await writer.close()
    return results


def best_throughput(results: Sequence[dict[str, Any]], label: str) -> float:
    return max((r["msgs_per_s"] for r in results if r["server"] == label and quotable(r)), default=0.0)


def find(results: Sequence[dict[str, Any]], label: str, clients: int, rate: float) -> dict[str, Any] | None:
    for r in results:
        if r["server"] == label and r["clients"] == clients and r["target_rate"] == rate:
            return r
    return None


def plot(results: Sequence[dict[str, Any]], name: str) -> None:
    def draw(ax: Any) -> None:
        keys = sorted({(r["server"], r["clients"]) for r in results})
        for server, count in keys:
            pts = [r for r in results if r["server"] == server and r["clients"] == count]
            ax.plot(
                [max(p["msgs_per_s"], 1) for p in pts],
                [p["p99"] * 1000 for p in pts],
                marker="o",
                label=f"{server}, {count:,} clients",
            )
        ax.axhline(P99_LIMIT * 1000, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("delivered messages/s")
        ax.set_ylabel("p99 commit-to-client latency (ms)")
        ax.set_title("rowcast fan-out: p99 latency vs delivered throughput")
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)

    common.write_png(name, draw)


def rowcast_label(mode: str, workers: int) -> str:
    """`rowcast (notify)` for one process (the label the targets read), else with its workers."""
    return f"rowcast ({mode})" if workers == 1 else f"rowcast ({mode}, {workers} workers)"


async def run_rowcast(
    db: Database, args: argparse.Namespace, opts: Options, notes: list[str]
) -> list[dict[str, Any]]:
    """`rowcast notifier` once per wake mode and worker count."""
    results: list[dict[str, Any]] = []
    for mode in args.modes:
        for workers in args.workers:
            label = rowcast_label(mode, workers)
            problem = common.set_wake_mode(db.url, mode)
            if problem:
                notes.append(f"{label}: {problem}")
                print(f"  {label}: {problem}")
                continue
            name = f"notifier-{mode}-{workers}w"
            server = common.notifier(db, name=name, workers=workers, ROWCAST_WAKE_MODE=mode)
            with common.running(server):
                results += await series(
                    label, [server], db, "rowcast", args.clients, args.rates, opts, stop=not args.every_rate
                )
            common.set_wake_mode(db.url, "notify")
    return results


async def run_plain(
    db: Database, args: argparse.Namespace, opts: Options, which: str
) -> list[dict[str, Any]]:
    """The floor or the relay, with the row_to_json trigger in place for their run only."""
    if which == "floor":
        server, label, protocol = common.baseline(db, channel=CHANNEL), FLOOR, "raw"
    else:
        server, label, protocol = common.socketio_relay(db, CHANNEL), RELAY, "socketio"
    with row_notify(db), common.running(server):
        return await series(
            label, [server], db, protocol, args.clients, args.rates, opts, stop=not args.every_rate
        )


async def run(args: argparse.Namespace) -> None:
    opts = Options(args.duration, args.warmup, args.drain, args.client_procs)
    results: list[dict[str, Any]] = []
    notes: list[str] = []
    if "socketio" in args.servers:
        common.npm_install()  # fail before Postgres starts, not after the rowcast run
    with common.database() as db:
        prepare(db)
        info = common.machine(db.url)
        print(f"machine: {info['cores']} cores, {info['cpu']}, loadavg {info['loadavg_before']}")
        for which in args.servers:
            if which == "rowcast":
                results += await run_rowcast(db, args, opts, notes)
            else:
                results += await run_plain(db, args, opts, which)
    info["loadavg_after"] = common.loadavg()
    text = common.table(
        f"Fan-out, side by side (loadavg before {info['loadavg_before']}, after {info['loadavg_after']}; "
        f"{info['cores']} cores)",
        HEADERS,
        [row(r["server"], r) for r in side_by_side(results)],
    )
    text += summary(results, args.modes, notes)
    common.write_results(args.name, {"machine": info, "options": vars(args), "results": results}, text)
    plot(results, args.name)


def side_by_side(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by point (clients, then rate), servers in the order they ran within each."""
    order = {label: i for i, label in enumerate(dict.fromkeys(r["server"] for r in results))}
    return sorted(results, key=lambda r: (r["clients"], r["target_rate"], order[r["server"]]))


def versus_relay(results: Sequence[dict[str, Any]]) -> list[str]:
    """Per point that rowcast and the relay both measured: CPU per message and p99, each side."""
    lines: list[str] = []
    for r in side_by_side(results):
        if not r["server"].startswith("rowcast"):
            continue
        other = find(results, RELAY, r["clients"], r["target_rate"])
        if other is None:
            continue
        mine, theirs = cpu_per_message(r), cpu_per_message(other)
        caveat = (
            "" if r["valid"] == other["valid"] == "yes" else " (a side is invalid: loadgen over the limit)"
        )
        lines.append(
            f"- {r['server']} vs {RELAY}, {r['clients']:,} clients x {r['target_rate']:g}/s: "
            f"srv CPU {mine:.1f} vs {theirs:.1f} µs/msg ({mine / max(theirs, 1e-9):.2f}x), "
            f"p99 {ms(r['p99'])} vs {ms(other['p99'])} ms{caveat}"
        )
    return lines


def versus_one_process(results: Sequence[dict[str, Any]], modes: Sequence[str]) -> list[str]:
    """Per client count: best msg/s at p99 ≤ 100 ms (valid points) with N workers against one process."""
    lines: list[str] = []
    labels = {r["server"] for r in results}
    for mode in modes:
        one = rowcast_label(mode, 1)
        more = sorted(label for label in labels if label.startswith(f"rowcast ({mode}, "))
        if one not in labels or not more:
            continue
        lines += ["", f"Workers against one process, {mode} (best delivered msg/s with p99 ≤ 100 ms):"]
        for count in sorted({r["clients"] for r in results}):
            base = best_by_clients(results, one, count)
            cells = [f"1 process {base:,.0f}"]
            for label in more:
                best = best_by_clients(results, label, count)
                ratio = f" ({best / base:.2f}x)" if base else ""
                cells.append(f"{label.removeprefix(f'rowcast ({mode}, ').rstrip(')')} {best:,.0f}{ratio}")
            lines.append(f"- {count:,} clients: " + ", ".join(cells))
    return lines


def best_by_clients(results: Sequence[dict[str, Any]], label: str, clients: int) -> float:
    return max(
        (
            r["msgs_per_s"]
            for r in results
            if r["server"] == label and r["clients"] == clients and quotable(r)
        ),
        default=0.0,
    )


def summary(results: Sequence[dict[str, Any]], modes: Sequence[str], notes: Sequence[str]) -> str:
    lines = [
        "",
        "Best delivered msg/s with p99 ≤ 100 ms at a valid point, per client count (the rate grid is coarse):",
    ]
    labels = sorted({r["server"] for r in results})
    for count in sorted({r["clients"] for r in results}):
        cells = [f"{label} {best_by_clients(results, label, count):,.0f}" for label in labels]
        lines.append(f"- {count:,} clients: " + ", ".join(cells))
    measured = {r["server"] for r in results}
    modes = [m for m in modes if f"rowcast ({m})" in measured]  # rowcast's targets only if it ran
    lines += ["", "Targets:"] if modes else []
    floor = best_throughput(results, FLOOR)
    for mode in modes:
        label = f"rowcast ({mode})"
        best = best_throughput(results, label)
        if not any(r["server"] == label for r in results):
            lines.append(f"- {label}: not measured")
            continue
        # Judged per client count (the hardest one decides), not on one best point overall.
        ratios = {
            count: best_by_clients(results, label, count) / best_by_clients(results, FLOOR, count)
            for count in sorted({r["clients"] for r in results})
            if best_by_clients(results, FLOOR, count)
        }
        if not floor and any(r["server"] == FLOOR for r in results):
            lines.append(
                f"- throughput at p99 ≤ 100 ms within 0.8x of the floor, {label}: undetermined: the "
                "baseline itself met p99 ≤ 100 ms at no point (the machine is the bottleneck; re-run)"
            )
        if floor and ratios:
            worst = min(ratios.values())
            detail = ", ".join(f"{c:,} clients {v:.2f}x" for c, v in ratios.items())
            lines.append(
                f"- throughput at p99 ≤ 100 ms within 0.8x of the floor, {label}: {detail} "
                f"(best overall {best:,.0f} vs {floor:,.0f} msg/s): {common.verdict(worst >= 0.8)}"
            )
        r = find(results, label, 1000, 100)
        stopped = [x for x in results if x["server"] == label and x["clients"] == 1000 and not x["ok"]]
        if r is None and stopped and stopped[0]["target_rate"] < 100:
            x = stopped[0]
            lines.append(
                f"- p99 ≤ 25 ms at 1,000 clients x 100 changes/s, {label}: NOT met (the series stopped "
                f"at {x['target_rate']:g} changes/s with p99 {ms(x['p99'])} ms)"
            )
        elif r is None:
            lines.append(f"- p99 ≤ 25 ms at 1,000 clients x 100 changes/s, {label}: not measured")
        else:
            lines.append(
                f"- p99 ≤ 25 ms at 1,000 clients x 100 changes/s, {label}: p99 {ms(r['p99'])} ms: "
                f"{common.verdict(r['p99'] <= 0.025 and r['ok'])}"
            )
    lines += [f"- {note}" for note in notes]
    lines += versus_one_process(results, modes)
    relay = versus_relay(results)
    if relay:
        lines += ["", "Against the Socket.IO relay, point by point:", *relay]
    invalid = [r for r in results if r.get("valid", "yes") != "yes"]
    if invalid:
        lines += ["", f"{len(invalid)} point(s) invalid: a load generator passed {LOADGEN_LIMIT}% of a core."]
    text = "\n".join(lines) + "\n"
    print(text)
    return text


def parser(doc: str | None = __doc__) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: small counts, short windows")
    p.add_argument("--clients", type=int, nargs="+", help="client counts (default 100 1000 5000)")
    p.add_argument("--rates", type=float, nargs="+", help="changes/s (default 10 30 100 300 1000)")
    p.add_argument("--modes", nargs="+", choices=["notify", "coalesced"], help="wake modes (default both)")
    p.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="rowcast notifier --workers counts, each its own series (default 1; e.g. 1 2)",
    )
    p.add_argument("--duration", type=float, help="measured seconds per point (default 8)")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--drain", type=float, default=5.0, help="seconds to wait for stragglers")
    p.add_argument(
        "--servers",
        type=servers_arg,
        default=list(SERVERS),
        help="comma-separated, in run order (default rowcast,floor,socketio)",
    )
    p.add_argument(
        "--client-procs", type=int, help="load-generator processes per client count (default: loadgen_procs)"
    )
    p.add_argument("--no-baseline", action="store_true", help="same as --servers rowcast")
    p.add_argument(
        "--every-rate",
        action="store_true",
        help="run every rate, past p99 100 ms too, so every server has every point side by side",
    )
    p.add_argument("--name", help="result file name under bench/results/")
    return p


def main() -> None:
    args = parser().parse_args()
    args.clients = args.clients or ([100, 1000] if args.quick else [100, 1000, 5000])
    args.rates = args.rates or ([10, 100] if args.quick else [10, 30, 100, 300, 1000])
    # The quick smoke runs one wake mode, so three servers fit in about a minute.
    args.modes = args.modes or (["notify"] if args.quick else ["notify", "coalesced"])
    if args.no_baseline:
        args.servers = ["rowcast"]
    args.duration = args.duration or (2.0 if args.quick else 8.0)
    args.name = args.name or ("fanout-quick" if args.quick else "fanout")
    common.raise_nofile()
    common.handle_sigterm()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
