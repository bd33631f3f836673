"""The oracle: the change log and the tables in Postgres are the truth; each feed is judged by it.

For every feed: each frame it received is a committed change (in the log), inside its filter
and scope, not from before its starting cursor, in the right shape (`moved` in/out, no other
user's data); after the per-row rule every visible change was applied exactly once (mode "all":
no gap), in per-row commit order; and the table it materialised equals the table in Postgres
restricted to its view. The writers' ledger is checked against the log too (including two-phase
transactions: the ledger records whether each prepared one was committed or rolled back).

Undecodable changes (model.DEEP): a notice without row data is accepted only for a change whose
images really nest too deep; it counts as applied, and the keys it names are excused from the
materialised-table comparison (the application would reload them).
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import set_json_loads

from tests.reliability.clients import Feed, Received
from tests.reliability.model import (
    ROLLBACK_MARK,
    TABLES,
    LogChange,
    Snap,
    View,
    canon,
    digest,
    key_of,
    loads,
)
from tests.reliability.workload import Ledger


@dataclass
class Truth:
    changes: dict[int, LogChange] = field(default_factory=dict)
    by_table: dict[str, list[LogChange]] = field(default_factory=dict)
    final: dict[str, dict[str, tuple[dict[str, Any], int]]] = field(
        default_factory=dict
    )  # key -> (row, digest)
    xids: list[int] = field(default_factory=list)  # every change's xid, sorted
    marked: int = 0  # log rows carrying a rolled-back write's mark
    tags: dict[int, str] = field(default_factory=dict)  # xid -> the fault that wrote it (reports)

    def describe(self, change_id: int) -> str:
        c = self.changes.get(change_id)
        if c is None:
            return str(change_id)
        return f"{change_id} (xid {c.xid}{', ' + self.tags[c.xid] if c.xid in self.tags else ''})"

    def expected(self, feed: Feed) -> list[int]:
        start = feed.start_snapshot
        if start is None:
            return []
        return [
            c.id
            for c in self.by_table.get(feed.view.table, ())
            if not start.visible(c.xid) and feed.view.variant(c) is not None
        ]

    def final_rows(self, view: View) -> dict[str, int]:
        return {k: d for k, (image, d) in self.final.get(view.table, {}).items() if view.visible(image)}

    def window(self, cursor: str) -> int:
        """Changes a replay from `cursor` scans and skips: xid >= xmin yet already seen."""
        snap = Snap.parse(cursor)
        lo, hi = bisect.bisect_left(self.xids, snap.xmin), bisect.bisect_left(self.xids, snap.xmax)
        in_flight = sum(
            bisect.bisect_right(self.xids, x) - bisect.bisect_left(self.xids, x) for x in snap.xip
        )
        return hi - lo - in_flight


async def read_truth(url: str) -> Truth:
    truth = Truth()
    async with await psycopg.AsyncConnection.connect(url) as conn:
        set_json_loads(loads, conn)
        async with conn.cursor(name="oracle") as cur:
            await cur.execute(
                'SELECT id, xid::text, table_name, op, pk, "row", old FROM rowcast.changes '
                # DDL records (ODD_COLUMNS adds columns mid-run) are news about a table, not changes.
                "WHERE schema_name = 'public' AND op NOT IN ('schema', 'drop') ORDER BY id"
            )
            async for r in cur:
                change = LogChange.from_log(r)
                truth.changes[change.id] = change
                truth.by_table.setdefault(change.table, []).append(change)
        truth.xids = sorted(c.xid for c in truth.changes.values())
        row = await (
            await conn.execute(
                "SELECT count(*) FROM rowcast.changes WHERE strpos(coalesce(\"row\"::text, '') || coalesce(old::text, ''), %s) > 0",
                (ROLLBACK_MARK,),
            )
        ).fetchone()
        truth.marked = int(row[0]) if row else 0
        for table, pk in TABLES.items():
            rows = await (await conn.execute(f"SELECT to_jsonb(x) FROM {table} x")).fetchall()
            truth.final[table] = {key_of(table, {c: r[0][c] for c in pk}): (r[0], digest(r[0])) for r in rows}
    return truth


def excused(feed: Feed, truth: Truth) -> set[str]:
    """Keys the feed was told it must reload (undecodable notices): not compared."""
    keys: set[str] = set()
    for change_id in feed.notices:
        c = truth.changes.get(change_id)
        if c is not None and c.undecodable:
            keys |= {key_of(c.table, c.pk), key_of(c.table, c.old_key)}
    return keys


def compared_rows(feed: Feed, truth: Truth) -> tuple[dict[str, int], dict[str, int]]:
    """(what the feed materialised, what Postgres has in its view), minus the excused keys."""
    skip = excused(feed, truth)
    want = {k: d for k, d in truth.final_rows(feed.view).items() if k not in skip}
    return {k: d for k, d in feed.rows.items() if k not in skip}, want


def caught_up(feed: Feed, truth: Truth) -> bool:
    """Has this feed everything it must eventually have? (Polled while clients drain.)"""
    if feed.view.mode == "all" and not feed.admitted_set.issuperset(truth.expected(feed)):
        return False
    got, want = compared_rows(feed, truth)
    return got == want


class Findings:
    """Problems grouped by kind, with a few examples each (a failure must stay readable)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        if len(self.examples.setdefault(kind, [])) < 5:
            self.examples[kind].append(example)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def render(self) -> str:
        return "\n".join(
            f"  {kind}: {n}\n" + "\n".join(f"      {e}" for e in self.examples[kind])
            for kind, n in self.counts.items()
        )


def _shape(r: Received, c: LogChange, variant: str) -> str | None:
    """What is wrong with how this frame presents the change to this view, if anything."""
    want: tuple[str, str | None, str, int, int]
    if variant == "full":
        want = (c.op, None, canon(c.pk), c.row_digest, c.old_digest)
    elif variant == "in":
        want = ("insert", "in", canon(c.pk), c.row_digest, digest(None))
    else:  # out: a removal of the key the subscriber knows, and nothing else of the row
        want = ("delete", "out", canon(c.old_key), digest(None), digest(c.old_key))
    got = (r.op, r.moved, r.pk, r.row, r.old)
    names = ("op", "moved", "pk", "row", "old")
    wrong = [
        f"{n}: got {g!r} want {w!r}"
        for n, g, w in zip(names, got, want, strict=True)
        if g != w and n != "row" and n != "old"
    ]
    wrong += [
        f"{n} differs from the log"
        for n, g, w in zip(names, got, want, strict=True)
        if g != w and n in ("row", "old")
    ]
    return "; ".join(wrong) if wrong else None


def check_feed(feed: Feed, truth: Truth, findings: Findings) -> None:
    who = f"{feed.name} ({feed.view.describe()})"
    for p in feed.problems:
        findings.add("client-side violation", f"{who}: {p}")
    start = feed.start_snapshot
    if start is None:
        findings.add("never subscribed", who)
        return
    for r in feed.received:
        c = truth.changes.get(r.id)
        if c is None or c.table != feed.view.table:
            findings.add("frame not in the change log (rolled back or invented)", f"{who}: change {r.id}")
            continue
        if r.error is not None:  # a notice: no row, sent whatever the filter (it cannot be applied)
            if not c.undecodable:
                findings.add("undecodable notice for a change that decodes", f"{who}: change {r.id} {c.op}")
            elif r.pk != canon(None) and (r.pk, r.op) != (canon(c.pk), c.op):
                findings.add("undecodable notice names the wrong row", f"{who}: change {r.id}: {r.pk} {r.op}")
            if start.visible(c.xid):
                findings.add(
                    "frame the starting cursor had already seen",
                    f"{who}: change {r.id} xid {c.xid} start {feed.start}",
                )
            continue
        variant = feed.view.variant(c)
        if variant is None:
            findings.add(
                "frame outside the filter/scope", f"{who}: change {r.id} {c.op} row={c.row} old={c.old_image}"
            )
            continue
        if start.visible(c.xid):
            findings.add(
                "frame the starting cursor had already seen",
                f"{who}: change {r.id} xid {c.xid} start {feed.start}",
            )
        wrong = _shape(r, c, variant)
        if wrong:
            findings.add(f"frame in the wrong shape ({variant})", f"{who}: change {r.id} {c.op}: {wrong}")
    if feed.view.mode == "all":
        missing = sorted(set(truth.expected(feed)) - feed.admitted_set)
        if missing:
            findings.add(
                "gap: visible changes never applied",
                f"{who}: {len(missing)} missing, e.g. {[truth.describe(i) for i in missing[:10]]}",
            )
    got, want = compared_rows(feed, truth)
    if got != want:
        extra = sorted(set(got) - set(want))[:5]
        absent = sorted(set(want) - set(got))[:5]
        stale = sorted(k for k in set(want) & set(got) if want[k] != got[k])[:5]
        findings.add(
            "materialised table differs from Postgres",
            f"{who}: extra {extra} missing {absent} stale {stale} ({len(got)} vs {len(want)} rows)",
        )


def check_ledger(ledger: Ledger, truth: Truth, findings: Findings, extra_xids: set[int]) -> None:
    per_xid = Counter(c.xid for c in truth.changes.values())
    for xid in ledger.rolled_back & per_xid.keys():
        findings.add("rolled-back transaction in the change log", f"xid {xid}: {per_xid[xid]} change(s)")
    for xid, counted in ledger.committed.items():
        if per_xid.get(xid, 0) != counted:
            findings.add(
                "committed transaction's changes not all logged",
                f"xid {xid}: counted {counted}, logged {per_xid.get(xid, 0)}",
            )
    known = ledger.committed.keys() | ledger.unknown | extra_xids
    for xid in per_xid.keys() - known:
        findings.add("change log holds a transaction no writer committed", f"xid {xid}")
    if truth.marked:
        findings.add(
            "rolled-back write in the change log", f"{truth.marked} log row(s) carry {ROLLBACK_MARK!r}"
        )
