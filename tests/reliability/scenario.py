"""The randomized scenario: writers, subscribers and faults at once, then the oracle.

One seed fixes every random choice the test makes (views, tokens, workload, fault schedule);
the interleaving with the servers is real, so a seed replays the same plan, not the same run.

The fault schedule draws, by weight (Profile.faults), from:

- listener: pg_terminate_backend the LISTEN connection of one notifier or all;
- kill: SIGKILL a notifier and start it again;
- postgres: restart Postgres (only when the test owns the server);
- pause: SIGSTOP a notifier for 2-5 s while a login with no grants floods the NOTIFY queue with
  large forged payloads, then SIGCONT (the paused-notifier profile, on a server whose queue is
  made small: max_notify_queue_pages = 64). No writer may fail: capture stops ringing at half;
- forge: a login with NO grants (created per run) floods `pg_notify('rowcast', ...)` in bursts:
  forged change JSON (ids far beyond the log, rows carrying ROLLBACK_MARK), checkpoint-looking
  JSON, garbage, empty and near-limit payloads. The channel is only a doorbell: nothing of it may
  reach a client (the oracle would see a frame not in the log);
- hostile: a writer for 1-4 s whose session sets rowcast.wake = off, rowcast.rang = 'y',
  rowcast.wake_mode = 'coalesced' and a weird search_path (workload.HOSTILE_SETTINGS);
- prepared: a two-phase transaction (workload.TwoPhase), committed or rolled back 0.05-2 s after
  PREPARE; skipped when `SHOW max_prepared_transactions` is 0 (the report says so);
- mode: rowcast.set_wake_mode switches between notify and coalesced;
- prune: `rowcast.prune(<an age just longer than the run so far>)` while the long transaction
  is open: it removes nothing a subscriber needs, and must not break the reader or cause resyncs;
- odd: pathological rows in t (workload.odd_rows): jsonb nested 1,200 deep, 400-digit numerics.

The light faults (forge, hostile, prepared, odd) run in the background, so the schedule goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import set_json_loads

from rowcast.auth import issue_token
from tests.pg import ROLE_PASSWORD, as_role
from tests.reliability.clients import Feed, PyClient, RawClient, Subscriber
from tests.reliability.cluster import (
    SECRET,
    Replica,
    pg_connections,
    queue_usage,
    terminate_listeners,
    wait_all_healthy,
)
from tests.reliability.model import ODD_COLUMNS, ROLLBACK_MARK, T_DDL, TABLES, View, loads
from tests.reliability.oracle import Findings, Truth, caught_up, check_feed, check_ledger, read_truth
from tests.reliability.workload import (
    HOSTILE_SETTINGS,
    Ledger,
    LongTransaction,
    TwoPhase,
    Writer,
    WriterProfile,
    odd_rows,
)

# The faults every profile mixes in besides its own (weights; see the module docstring).
LIGHT_FAULTS = {"forge": 1.5, "hostile": 1.0, "prepared": 1.5, "mode": 1.0, "prune": 1.0, "odd": 1.5}

WHERE: dict[str, list[dict[str, Any] | None]] = {
    "books": [
        None,
        {"owner": {"eq": "bob"}},
        {"num_pages": {"gt": 500}},
        {"owner": {"in": ["alice", "carol"]}, "num_pages": {"lte": 800}},
        {"owner": {"is_null": True}},
    ],
    "authors": [None, {"born": {"gte": 1950}}, {"owner": {"neq": "alice"}}],
    "t": [None, {"n": {"lt": 50}}, {"tag": {"like": "a%"}}, {"owner": {"is_null": False}, "n": {"gte": 20}}],
}


@dataclass
class Profile:
    name: str
    duration: float
    writers: int
    python_clients: int
    raw_clients: int
    late_joiners: int
    replicas: int = 2
    fault_interval: tuple[float, float] = (0.7, 2.0)
    # Relative weights; "postgres" only applies when the test owns a restartable server.
    faults: dict[str, float] = field(
        default_factory=lambda: {"listener": 3.0, "kill": 2.0, "postgres": 1.0, **LIGHT_FAULTS}
    )
    chaos_interval: tuple[float, float] = (1.0, 5.0)
    stall: tuple[float, float] = (2.0, 8.0)  # a client that reads nothing at all for this long
    latest_share: float = 0.2  # of raw subscriptions that use mode "latest"
    queue_messages: int = 300  # small, so slow readers get 4008 and resume
    long_transaction: bool = True
    writer: WriterProfile = field(default_factory=WriterProfile)
    sample_every: float = 1.0
    settle_timeout: float = 60.0
    never_kill: tuple[int, ...] = (0,)  # this replica's memory series spans the whole run
    wake_mode: str | None = None  # None: the seed picks notify or coalesced (when the schema has both)
    writers_may_fail: bool = True  # False: any writer error but a deadlock is a finding
    first_fault: str | None = None  # this kind comes first, whatever the seed draws after it


SHORT = Profile("short", duration=14.0, writers=3, python_clients=3, raw_clients=3, late_joiners=2)
# A notifier SIGSTOPped while forgers fill a small NOTIFY queue (max_notify_queue_pages = 64, set
# by the test); no kills or restarts, so any writer error but a deadlock is a finding.
PAUSE = Profile(
    "short+pause",
    duration=14.0,
    writers=3,
    python_clients=3,
    raw_clients=3,
    late_joiners=2,
    fault_interval=(1.0, 2.5),
    faults={"pause": 4.0, "listener": 1.0, **LIGHT_FAULTS},
    writers_may_fail=False,
    first_fault="pause",
)
SOAK = Profile(
    "soak",
    duration=600.0,
    writers=4,
    python_clients=6,
    raw_clients=8,
    late_joiners=6,
    fault_interval=(5.0, 20.0),
    chaos_interval=(3.0, 20.0),
    stall=(3.0, 15.0),
    sample_every=5.0,
    settle_timeout=180.0,
    writer=WriterProfile(truncate=0.0005, think=(0.0, 0.03), burst=0.003, big_burst=0.002),
)


@dataclass
class Report:
    seed: int
    profile: str
    findings: Findings
    stats: dict[str, Any]
    samples: dict[int, list[tuple[float, int, int]]]  # replica -> (seconds since start, rss, fds)
    leaks: dict[str, Any]
    windows: list[int]  # per resume: changes the replay scanned and skipped
    logs: list[str]

    def summary(self) -> str:
        lines = [f"profile {self.profile}, ROWCAST_SEED={self.seed}"]
        lines += [f"  {k}: {v}" for k, v in self.stats.items()]
        for index, series in self.samples.items():
            if series:
                rss = [s[1] // (1 << 20) for s in series]
                fds = [s[2] for s in series]
                lines.append(
                    f"  replica {index}: RSS MiB min/median/max {min(rss)}/{statistics.median(rss)}/{max(rss)}, FDs {min(fds)}/{statistics.median(fds)}/{max(fds)} over {len(series)} samples"
                )
                if len(series) > 20:  # a long run: the series itself, about a dozen points
                    step = max(1, len(series) // 12)
                    points = ", ".join(f"{t:.0f}s {r >> 20}M/{f}" for t, r, f in series[::step])
                    lines.append(f"    RSS MiB/FDs over time: {points}")
        if self.windows:
            lines.append(
                f"  resume windows (already-seen changes a replay scans): median {statistics.median(self.windows)}, max {max(self.windows)} over {len(self.windows)} resumes"
            )
        lines += [f"  leaks: {self.leaks}"]
        return "\n".join(lines)


class Scenario:
    def __init__(
        self,
        profile: Profile,
        url: str,
        seed: int,
        log_dir: Path,
        restart_postgres: Callable[[], None] | None = None,
    ) -> None:
        self.p = profile
        self.url = url
        self.seed = seed
        self.rng = random.Random(seed)
        self.log_dir = log_dir
        self.restart_postgres = restart_postgres
        self.pg_port = int(conninfo_to_dict(url).get("port") or 5432)
        self.ledger = Ledger()
        self.stop = asyncio.Event()
        self.replicas: list[Replica] = []
        self.clients: list[Subscriber] = []
        self.long: LongTransaction | None = None
        self.fault_log: list[str] = []
        self.started = 0.0
        self.queue_samples: list[float] = []
        self.loops: list[asyncio.Task[None]] = []
        self.writers: list[asyncio.Task[None]] = []
        self.wake_mode = "notify"
        self.counters: dict[str, dict[str, float]] = {}
        self.side: list[asyncio.Task[None]] = []  # light faults running in the background
        self.forger = f"rct_forger_{uuid.uuid4().hex[:10]}"  # a login with no grants at all
        self.forged: dict[str, int] = {}
        self.prepared_ok = False
        self.mode_switches = 0
        self.pruned: list[int] = []
        self.hostile_writers = 0
        self.two_phase = 0

    # -- set-up ----------------------------------------------------------------------------------

    async def prepare_database(self) -> None:
        """Create and capture t; pick the wake-up mode (README: Wake-up modes) if the schema has both."""
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            exists = await (await conn.execute("SELECT to_regclass('public.t')")).fetchone()
            if exists is None or exists[0] is None:
                for statement in T_DDL:
                    await conn.execute(statement)  # type: ignore[arg-type]
            for statement in ODD_COLUMNS:
                await conn.execute(statement)  # type: ignore[arg-type]
            await conn.execute(f"CREATE ROLE {self.forger} LOGIN PASSWORD '{ROLE_PASSWORD}'")  # type: ignore[arg-type]
            row = await (await conn.execute("SHOW max_prepared_transactions")).fetchone()
            self.prepared_ok = bool(row and int(row[0]) > 0)
            modes = await (
                await conn.execute("SELECT to_regproc('rowcast.set_wake_mode') IS NOT NULL")
            ).fetchone()
            if modes and modes[0]:
                self.wake_mode = self.p.wake_mode or self.rng.choice(("notify", "coalesced"))
                await conn.execute("SELECT rowcast.set_wake_mode(%s)", (self.wake_mode,))

    def make_client(self, index: int, kind: str) -> Subscriber:
        rng = self.rng
        user = rng.choice(("alice", "bob"))
        scoped = rng.random() < 0.5
        tables = (
            [rng.choice(list(TABLES))] if kind == "python" else rng.sample(list(TABLES), rng.randint(1, 2))
        )
        scopes = [f"{table}.owner={user}" for table in tables] if scoped else []
        token = issue_token(SECRET, f"{user}-{kind}-{index}", read=tables, scopes=scopes)
        feeds: dict[str, Feed] = {}
        for ref, table in zip("ab", tables, strict=False):
            mode = "latest" if kind == "raw" and rng.random() < self.p.latest_share else "all"
            view = View(table, rng.choice(WHERE[table]), {"owner": user} if scoped else {}, mode)
            feeds[ref] = Feed(f"{kind}{index}.{ref}", view)
        client_rng = random.Random(rng.random())
        if kind == "python":
            return PyClient(f"py{index}", feeds["a"], token, client_rng)
        return RawClient(f"raw{index}", feeds, token, client_rng, lambda: [r.base for r in self.replicas])

    async def start_replicas(self) -> None:
        env = {
            "ROWCAST_AUTH": "token",
            "ROWCAST_JWT_SECRET": SECRET,
            "ROWCAST_POLL_INTERVAL": "50ms",
            "ROWCAST_QUEUE_MESSAGES": str(self.p.queue_messages),
            "ROWCAST_QUEUE_BYTES": str(1 << 20),
            "ROWCAST_HEARTBEAT": "5s",
            "ROWCAST_LOG_LEVEL": "INFO",
        }
        self.replicas = [Replica(i, self.url, self.log_dir, env) for i in range(self.p.replicas)]
        for r in self.replicas:
            r.start()
        await wait_all_healthy(self.replicas, 60)

    def pick_replica(self) -> str:
        return self.rng.choice(self.replicas).base

    # -- the run ---------------------------------------------------------------------------------

    async def run(self) -> Report:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 8000))  # the oracle parses rows nested 1,200 deep
        try:
            await self.prepare_database()
            await self.start_replicas()
            return await self._run()
        finally:
            await self._tear_down()
            sys.setrecursionlimit(limit)

    async def _tear_down(self) -> None:
        self.stop.set()
        for r in self.replicas:
            if r.alive:
                assert r.proc is not None
                os.kill(r.proc.pid, signal.SIGCONT)  # a failure in the middle of a pause
        leftover = [t for t in (*self.writers, *self.loops, *self.side) if not t.done()]  # after a failure
        for task in leftover:
            task.cancel()
        await asyncio.gather(*leftover, return_exceptions=True)
        for c in self.clients:
            await c.stop()
        if self.long is not None and self.long.conn is not None:
            await self.long.conn.close()
        for r in self.replicas:
            r.stop()
        with contextlib.suppress(psycopg.Error):
            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                await conn.execute(f"DROP ROLE IF EXISTS {self.forger}")  # type: ignore[arg-type]

    async def _run(self) -> Report:
        p, rng = self.p, self.rng
        if p.long_transaction:
            self.long = LongTransaction(self.url, self.ledger)
            await self.long.begin()
        kinds = ["python"] * p.python_clients + ["raw"] * p.raw_clients
        self.clients = [self.make_client(i, kind) for i, kind in enumerate(kinds)]
        for c in self.clients:
            c.start(self.pick_replica())
        await self._wait(
            lambda: all(f.start for c in self.clients for f in c.feeds), 30, "clients subscribed"
        )
        self.started = time.monotonic()
        writers = [
            Writer(i, self.url, random.Random(rng.random()), self.ledger, p.writer) for i in range(p.writers)
        ]
        self.writers = [asyncio.create_task(w.run(self.stop), name=f"writer-{w.index}") for w in writers]
        self.loops = [
            asyncio.create_task(self._faults(), name="faults"),
            asyncio.create_task(self._sampler(), name="sampler"),
            *(asyncio.create_task(self._chaos(c), name=f"chaos-{c.name}") for c in self.clients),
            asyncio.create_task(self._late_joiners(), name="late-joiners"),
        ]
        await asyncio.sleep(p.duration)  # the workload runs for this long
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.writers), 60)
        async with asyncio.timeout(120):  # a fault in progress finishes; late joiners add loops
            while pending := [t for t in self.loops if not t.done()]:
                await asyncio.wait(pending)
        for task in self.loops:
            task.result()
        async with asyncio.timeout(60):  # two-phase transactions finish; their fate is ledgered
            while pending := [t for t in self.side if not t.done()]:
                await asyncio.wait(pending)
        for task in self.side:
            task.result()
        return await self._settle_and_judge()

    async def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(f"seed {self.seed}: timed out after {timeout}s waiting for {what}") from None

    async def _settle_and_judge(self) -> Report:
        for r in self.replicas:
            if not r.alive:
                r.start()
        await wait_all_healthy(self.replicas, 60)
        long_xids: set[int] = set()
        if self.long is not None:
            await self.long.ensure_open()
            await self.long.commit()
            long_xids = set(self.long.xids)
        for c in self.clients:
            c.slow_until = c.stall_until = 0.0
        truth = await read_truth(self.url)
        truth.tags = self.ledger.tags
        settle_started = time.monotonic()
        with contextlib.suppress(AssertionError):
            await self._wait(
                lambda: all(
                    c.task is not None and (c.task.done() or all(caught_up(f, truth) for f in c.feeds))
                    for c in self.clients
                ),
                self.p.settle_timeout,
                "every client to catch up",
            )
        settle = time.monotonic() - settle_started
        findings = Findings()
        for c in self.clients:
            if c.failure is not None:
                findings.add("client stopped with an error", f"{c.name}: {c.failure!r}")
            for f in c.feeds:
                check_feed(f, truth, findings)
        check_ledger(self.ledger, truth, findings, long_xids)
        if not self.p.writers_may_fail:
            failed = {k: v for k, v in self.ledger.errors.items() if k != "DeadlockDetected"}
            if failed:
                findings.add("a writer failed while a notifier was paused", str(failed))
        self.counters = {f"replica{r.index}": await r.metrics() for r in self.replicas}
        for c in self.clients:
            await c.stop()
        leaks = await self._leaks(findings)
        return self._report(truth, findings, leaks, settle)

    async def _leaks(self, findings: Findings) -> dict[str, Any]:
        """After every client has left: no connections, subscriptions or backends left behind."""
        out: dict[str, Any] = {}

        async def drained() -> bool:
            for r in self.replicas:
                m = await r.metrics()
                if m.get("rowcast_connections:ws", 0) or m.get("rowcast_subscriptions", 0):
                    return False
            return True

        try:
            await self._wait_async(drained, 20)
        except TimeoutError:
            findings.add(
                "notifier kept connections or subscriptions after every client left",
                str([await r.metrics() for r in self.replicas]),
            )
        for r in self.replicas:
            m = await r.metrics()
            backends = await pg_connections(self.url, r, self.pg_port)
            sample = r.sample()
            out[f"replica{r.index}"] = {
                "ws": m.get("rowcast_connections:ws"),
                "subscriptions": m.get("rowcast_subscriptions"),
                "pg_backends": len(backends),
                "listeners": sum(1 for b in backends if b[0] == "rowcast-listener"),
                "fds": sample.fds if sample else None,
            }
            if len(backends) > 9:  # a pool of at most 8 and the LISTEN connection
                findings.add(
                    "notifier holds more Postgres connections than its pool allows",
                    f"replica {r.index}: {backends}",
                )
        try:
            await self._wait_async(lambda: _zero(queue_usage(self.url)), 30)
            out["queue_usage"] = 0.0
        except TimeoutError:
            usage = await queue_usage(self.url)
            findings.add(
                "pg_notification_queue_usage() did not return to 0",
                f"{usage}; LISTEN backends: {await self._listen_backends()}",
            )
            out["queue_usage"] = usage
        return out

    async def _listen_backends(self) -> list[tuple[Any, ...]]:
        """Each LISTEN backend: which replica holds it, its state and what it waits on (ClientWrite:
        the notifier is not reading its socket)."""
        owner = {port: r.index for r in self.replicas if r.alive for port in r.pg_ports(self.pg_port)}
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            rows = await (
                await conn.execute(
                    "SELECT client_port, state, wait_event_type, wait_event, backend_start::text, "
                    "left(query, 60) FROM pg_stat_activity WHERE application_name = 'rowcast-listener'"
                )
            ).fetchall()
        return [(f"replica {owner.get(r[0], '?')}", *r) for r in rows]

    async def _wait_async(self, predicate: Callable[[], Awaitable[bool]], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not await predicate():
                await asyncio.sleep(0.2)

    def _report(self, truth: Truth, findings: Findings, leaks: dict[str, Any], settle: float) -> Report:
        feeds = [f for c in self.clients for f in c.feeds]
        windows = [truth.window(cursor) for f in feeds for cursor in f.resumes]
        ledger = self.ledger
        stats = {
            "wake mode": self.wake_mode,
            "changes logged": len(truth.changes),
            "transactions committed / rolled back / unknown": f"{len(ledger.committed)} / {len(ledger.rolled_back)} / {len(ledger.unknown)}",
            "savepoints rolled back, 100 KB rows, key moves, truncates, bursts": f"{ledger.savepoints_rolled_back}, {ledger.big_rows}, {ledger.key_moves}, {ledger.truncates}, {ledger.bursts}",
            "writer errors": dict(ledger.errors),
            "forged notifications (by kind; refused)": self.forged,
            "hostile writers, their transactions": f"{self.hostile_writers}, {ledger.hostile}",
            "two-phase transactions": dict(ledger.prepared)
            if self.prepared_ok
            else "skipped: max_prepared_transactions = 0 on this server",
            "wake-mode switches, prunes (rows removed)": f"{self.mode_switches}, {self.pruned}",
            "pathological rows written": dict(ledger.odd),
            "undecodable notices (repeated after resume)": f"{sum(len(f.notices) for f in feeds)} ({sum(f.repeated_notices for f in feeds)})",
            "clients (python/raw, late joiners)": f"{sum(c.kind == 'python' for c in self.clients)}/{sum(c.kind == 'raw' for c in self.clients)}, {self.p.late_joiners}",
            "feeds": [f"{f.name}: {f.view.describe()}" for f in feeds],
            "frames received / applied / dropped as duplicates": f"{sum(len(f.received) for f in feeds)} / {sum(len(f.admitted) for f in feeds)} / {sum(f.dropped for f in feeds)}",
            "client restarts (chaos), connections": f"{sum(c.restarts for c in self.clients)}, {sum(c.connections for c in self.clients)}",
            "faults": dict(_count(self.fault_log)),
            "raw clients' close codes": _merge(
                c.close_codes for c in self.clients if isinstance(c, RawClient)
            ),
            "replica counters (last incarnation): drops / replayed / listener reconnects": {
                name: [
                    m.get(k, 0.0)
                    for k in (
                        "rowcast_slow_consumer_drops_total",
                        "rowcast_replayed_events_total",
                        "rowcast_listener_reconnects_total",
                    )
                ]
                for name, m in self.counters.items()
            },
            "settle seconds": round(settle, 2),
            "max queue usage": max(self.queue_samples, default=0.0),
        }
        samples = {r.index: [(s.at - self.started, s.rss, s.fds) for s in r.samples] for r in self.replicas}
        return Report(
            self.seed,
            self.p.name,
            findings,
            stats,
            samples,
            leaks,
            windows,
            [r.log_tail() for r in self.replicas],
        )

    # -- background loops ------------------------------------------------------------------------

    async def _faults(self) -> None:
        rng = random.Random(self.rng.random())
        kinds = {
            k: w
            for k, w in self.p.faults.items()
            if (k != "postgres" or self.restart_postgres is not None)
            and (k != "prepared" or self.prepared_ok)
        }
        while not self.stop.is_set():
            await _sleep_unless(self.stop, rng.uniform(*self.p.fault_interval))
            if self.stop.is_set():
                return
            kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
            if self.p.first_fault is not None and not self.fault_log:
                kind = self.p.first_fault
            self.fault_log.append(kind)
            if kind == "listener":
                target = rng.choice([*self.replicas, None])
                await terminate_listeners(self.url, target, self.pg_port)
            elif kind == "kill":
                candidates = [r for r in self.replicas if r.index not in self.p.never_kill] or self.replicas
                victim = rng.choice(candidates)
                victim.kill()
                await asyncio.sleep(rng.uniform(0.0, 1.0))
                victim.start()
                await victim.healthy(60)
            elif kind == "postgres":
                assert self.restart_postgres is not None
                await asyncio.to_thread(self.restart_postgres)
                await wait_all_healthy(self.replicas, 60)
                if self.long is not None:
                    await self.long.ensure_open()
            elif kind == "pause":
                await self._pause(rng)
            elif kind == "forge":
                self._background(self._forge(random.Random(rng.random()), big=False), "forge")
            elif kind == "hostile":
                self._background(self._hostile(random.Random(rng.random())), "hostile")
            elif kind == "prepared":
                self.two_phase += 1
                writer = Writer(
                    200 + self.two_phase, self.url, random.Random(rng.random()), self.ledger, self.p.writer
                )
                gid = f"rct-{self.seed}-{self.two_phase}-{uuid.uuid4().hex[:6]}"
                job = TwoPhase(writer, gid).run(rng.uniform(0.05, 2.0), commit=rng.random() < 0.6)
                self._background(job, "prepared")
            elif kind == "mode":
                await self._switch_mode()
            elif kind == "prune":
                await self._prune()
            elif kind == "odd":
                self._background(odd_rows(self.url, random.Random(rng.random()), self.ledger), "odd")

    def _background(self, job: Awaitable[None], name: str) -> None:
        async def wrapped() -> None:
            await job

        self.side.append(asyncio.create_task(wrapped(), name=name))

    async def _pause(self, rng: random.Random) -> None:
        """SIGSTOP a notifier while a forger fills the NOTIFY queue; SIGCONT; it must catch up."""
        victim = rng.choice([r for r in self.replicas if r.alive])
        assert victim.proc is not None
        os.kill(victim.proc.pid, signal.SIGSTOP)
        try:
            flood = asyncio.create_task(self._forge(random.Random(rng.random()), big=True))
            await asyncio.sleep(rng.uniform(2.0, 5.0))
            with contextlib.suppress(psycopg.Error):
                self.queue_samples.append(await queue_usage(self.url))
            flood.cancel()  # the flood lasts as long as the pause
            with contextlib.suppress(asyncio.CancelledError):
                await flood
        finally:
            os.kill(victim.proc.pid, signal.SIGCONT)
        await victim.healthy(60)

    def _forged_payloads(self, rng: random.Random, big: bool) -> list[str]:
        out: list[str] = []
        for i in range(rng.randint(50, 400) if not big else rng.randint(20, 60)):
            kind = rng.choice(("change", "change", "checkpoint", "garbage", "empty", "huge"))
            if big:
                kind = "huge"
            fake_id = rng.choice((10**9 + rng.randint(0, 10**6), rng.randint(1, 50)))
            if kind == "change":
                text = json.dumps(
                    {
                        "id": fake_id, "xid": str(rng.randint(1, 10**6)), "schema": "public",
                        "table": rng.choice(list(TABLES)), "op": rng.choice(("insert", "update", "delete", "truncate")),
                        "pk": {"id": rng.randint(1, 16)},
                        "row": {"id": rng.randint(1, 16), "owner": rng.choice(("alice", "bob")), "tag": ROLLBACK_MARK + "forged",
                                "title": ROLLBACK_MARK + "forged", "name": ROLLBACK_MARK + "forged", "n": 1, "num_pages": 1, "born": 1960},
                        "old": None, "actor": {}, "at": "2026-01-01T00:00:00+00:00",
                    }
                )  # fmt: skip
            elif kind == "checkpoint":
                text = json.dumps(
                    {"type": "checkpoint", "cursor": f"{rng.randint(1, 9)}:{rng.randint(10, 99)}:"}
                )
            elif kind == "garbage":
                text = "".join(chr(rng.randint(1, 0x2FF)) for _ in range(rng.randint(1, 200)))
            elif kind == "empty":
                text = ""
            else:  # near the 8000-byte payload limit
                text = json.dumps({"id": fake_id, "op": "insert", "row": {"tag": ROLLBACK_MARK + "x" * 7800}})
            self.forged[kind] = self.forged.get(kind, 0) + 1
            out.append(f"{text}{'' if kind == 'empty' else ' ' * (i % 3)}")
        return out

    async def _forge(self, rng: random.Random, big: bool) -> None:
        """Bursts of forged notifications from a login that may do nothing else."""
        try:
            async with await psycopg.AsyncConnection.connect(
                as_role(self.url, self.forger), autocommit=True, application_name="forger"
            ) as conn:
                for _ in range(rng.randint(3, 10) if not big else rng.randint(60, 200)):
                    payloads = self._forged_payloads(rng, big)
                    try:
                        await conn.execute(
                            "SELECT count(pg_notify('rowcast', p)) FROM unnest(%s::text[]) p", (payloads,)
                        )
                    except psycopg.errors.ProgramLimitExceeded:  # the queue is full: the forger's problem
                        self.forged["refused (queue full)"] = self.forged.get("refused (queue full)", 0) + 1
                        await asyncio.sleep(0.05)
                    if self.stop.is_set():
                        return
        except psycopg.OperationalError:
            self.forged["connection lost"] = self.forged.get("connection lost", 0) + 1

    async def _hostile(self, rng: random.Random) -> None:
        """A writer with hostile session settings for 1-4 s; every change it commits must arrive."""
        self.hostile_writers += 1
        settings = tuple(s for s in HOSTILE_SETTINGS if rng.random() < 0.7) or HOSTILE_SETTINGS
        writer = Writer(100 + self.hostile_writers, self.url, rng, self.ledger, self.p.writer, settings)
        done = asyncio.Event()
        task = asyncio.create_task(writer.run(done))
        await _sleep_unless(self.stop, rng.uniform(1.0, 4.0))
        done.set()
        await task

    async def _switch_mode(self) -> None:
        mode = "coalesced" if self.wake_mode == "notify" else "notify"
        with contextlib.suppress(psycopg.OperationalError):  # Postgres may be restarting
            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                await conn.execute("SELECT rowcast.set_wake_mode(%s)", (mode,))
            self.wake_mode = mode
            self.mode_switches += 1

    async def _prune(self) -> None:
        """Prune with an age just longer than the run so far, while the long transaction is open."""
        if self.long is None or self.long.conn is None or self.long.conn.broken:
            return
        age = f"{int(time.monotonic() - self.started) + 60} seconds"
        with contextlib.suppress(psycopg.OperationalError):
            async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                row = await (
                    await conn.execute("SELECT removed FROM rowcast.prune(%s::interval)", (age,))
                ).fetchone()
            self.pruned.append(int(row[0]) if row and row[0] is not None else 0)

    async def _chaos(self, client: Subscriber) -> None:
        rng = random.Random(self.rng.random())
        while not self.stop.is_set():
            await _sleep_unless(self.stop, rng.uniform(*self.p.chaos_interval))
            if self.stop.is_set():
                return
            action = rng.choice(("drop", "move", "slow", "slow", "stall"))
            if action == "slow":
                client.slow_until = time.monotonic() + rng.uniform(0.5, 3.0)
            elif action == "stall":
                client.stall_until = time.monotonic() + rng.uniform(*self.p.stall)
            else:
                others = [r.base for r in self.replicas if r.base != client.base] or [client.base]
                await client.restart(client.base if action == "drop" else rng.choice(others))

    async def _sampler(self) -> None:
        while not self.stop.is_set():
            for r in self.replicas:
                r.sample()
            with contextlib.suppress(psycopg.Error):
                self.queue_samples.append(await queue_usage(self.url))
            await _sleep_unless(self.stop, self.p.sample_every)

    async def _late_joiners(self) -> None:
        """Clients that join mid-run: load a snapshot and subscribe from its cursor."""
        rng = random.Random(self.rng.random())
        times = sorted(rng.uniform(0.1, 0.8) * self.p.duration for _ in range(self.p.late_joiners))
        began = time.monotonic()
        for i, at in enumerate(times):
            await _sleep_unless(self.stop, max(0.0, began + at - time.monotonic()))
            if self.stop.is_set():
                return
            client = self.make_client(100 + i, rng.choice(("python", "raw")))
            while not await self._load_snapshot(client):
                await asyncio.sleep(0.2)  # Postgres is restarting
            self.clients.append(client)
            client.start(self.pick_replica())
            self.loops.append(asyncio.create_task(self._chaos(client), name=f"chaos-{client.name}"))

    async def _load_snapshot(self, client: Subscriber) -> bool:
        """One REPEATABLE READ transaction: the cursor of its snapshot and each table's rows."""
        try:
            async with await psycopg.AsyncConnection.connect(self.url) as conn:
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                set_json_loads(loads, conn)
                row = await (await conn.execute("SELECT pg_current_snapshot()::text")).fetchone()
                assert row is not None
                for feed in client.feeds:
                    rows = await (
                        await conn.execute(f"SELECT to_jsonb(x) FROM {feed.view.table} x")
                    ).fetchall()
                    feed.load_snapshot(row[0], [r[0] for r in rows])
        except psycopg.OperationalError:
            return False
        return True


async def _zero(usage: Awaitable[float]) -> bool:
    return await usage == 0.0


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _merge(counts: Iterable[dict[int | None, int]]) -> dict[int | None, int]:
    out: dict[int | None, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def _count(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out
