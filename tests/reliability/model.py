"""The oracle's own model of what a subscriber may see, written apart from notifier/ on purpose.

The notifier decides visibility with notifier/filters.py and notifier/hub.py; the oracle decides
it again here, from the change log's row and old images, so a bug there cannot hide itself.

Rows are compared exactly: JSON is parsed with non-integer numbers as `Decimal` (a 400-digit
numeric survives), and nesting deeper than Python's default recursion limit is parsed too (the
scenario raises the limit for its run). A change whose images nest deeper than DEEP levels (the
documented limit of rowcast.jsonexact) is *undecodable*: the Python client yields it as a notice
with no row, and filtered subscribers get an `undecodable_change` error frame instead of it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

# The captured tables the workload writes: name -> primary-key columns.
TABLES: dict[str, tuple[str, ...]] = {"books": ("id",), "authors": ("id",), "t": ("id",)}
OWNERS = ("alice", "bob", "carol", None)
ROLLBACK_MARK = "RB-"  # in every value a rolled-back write stores; must never be seen anywhere

T_DDL = (
    "CREATE TABLE t (id bigint PRIMARY KEY, owner text, n integer, tag text, payload text)",
    "SELECT rowcast.enable_capture('t')",
)


DEEP = 512  # images nesting deeper than this cannot be decoded by rowcast (rowcast.jsonexact.MAX_DEPTH)
UNKNOWN = -1  # a materialised row the client must reload: it got an undecodable notice for it
ODD_COLUMNS = ("ALTER TABLE t ADD COLUMN IF NOT EXISTS doc jsonb, ADD COLUMN IF NOT EXISTS big numeric",)


def _exact(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return {"$numeric": str(obj)}  # the digits as Postgres wrote them, never a float
    raise TypeError(f"not JSON: {type(obj).__name__}")


def loads(text: str | bytes) -> Any:
    """JSON with exact numbers (the test's own parser, not rowcast.jsonexact)."""
    return json.loads(text, parse_float=Decimal)


def canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_exact)


def nesting(obj: Any) -> int:
    """How deep arrays and objects nest in a parsed JSON value (iterative: rows can nest 1,200 deep)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def digest(obj: Any) -> int:
    """A compact fingerprint of a JSON value (rows can be 100 KB; we keep only this)."""
    return hash(canon(obj))


def key_of(table: str, pk: dict[str, Any] | None) -> str:
    return table + ":" + canon(pk)


@dataclass(frozen=True)
class Snap:
    """A Postgres snapshot `xmin:xmax:xip`: which transactions it sees as finished."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Snap:
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))

    def visible(self, xid: int) -> bool:
        return xid < self.xmin or (xid < self.xmax and xid not in self.xip)


def _like(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern))


def _holds(value: Any, op: str, want: Any) -> bool:
    if op == "is_null":
        return bool((value is None) == want)
    if value is None:
        return False  # SQL: a comparison with NULL is not true
    if op == "eq":
        return bool(value == want)
    if op == "neq":
        return bool(value != want)
    if op == "in":
        return bool(value in want)
    if op == "like":
        return _like(want).fullmatch(value) is not None
    return bool({"lt": value < want, "lte": value <= want, "gt": value > want, "gte": value >= want}[op])


@dataclass(frozen=True)
class View:
    """One subscription's window on a table: its `where` and its token's row scope."""

    table: str
    where: dict[str, dict[str, Any]] | None = None
    scope: dict[str, Any] = field(default_factory=dict)
    mode: str = "all"

    @property
    def filtered(self) -> bool:
        return bool(self.where) or bool(self.scope)

    def visible(self, image: dict[str, Any] | None) -> bool:
        if image is None:
            return False
        if any(image.get(col) != value for col, value in self.scope.items()):
            return False
        return all(
            _holds(image.get(col), op, want)
            for col, conds in (self.where or {}).items()
            for op, want in conds.items()
        )

    def variant(self, change: LogChange) -> str | None:
        """full | in | out | None: how this view must receive `change` (docs/PROTOCOL.md `moved`)."""
        if change.table != self.table:
            return None
        if change.op == "truncate" or not self.filtered:
            return "full"
        if change.op == "insert":
            return "full" if self.visible(change.row) else None
        if change.op == "delete":
            return "full" if self.visible(change.old_image) else None
        was, now = self.visible(change.old_image), self.visible(change.row)
        return "full" if was and now else "in" if now else "out" if was else None

    def describe(self) -> str:
        return f"{self.table} where={canon(self.where)} scope={canon(self.scope)} mode={self.mode}"


@dataclass
class LogChange:
    """One row of rowcast.changes, trimmed to what the oracle needs."""

    id: int
    xid: int
    table: str
    op: str
    pk: dict[str, Any] | None
    row: dict[str, Any] | None  # filter and key columns only
    old_image: dict[str, Any] | None  # the full row before (filter and key columns only)
    row_digest: int
    old_digest: int
    old_key: dict[str, Any] | None  # the key the row had before the change
    undecodable: bool = False  # an image nests deeper than DEEP: rowcast may only say it exists

    @classmethod
    def from_log(cls, r: tuple[Any, ...]) -> LogChange:
        change_id, xid, table, op, pk, row, old = r
        pk_cols = TABLES.get(table, ())
        if op == "update" and row is not None:
            image: dict[str, Any] | None = {**row, **(old or {})}
        elif op == "delete":
            image = old
        else:
            image = None
        old_key = {c: image[c] for c in pk_cols} if image is not None else pk
        return cls(
            int(change_id),
            int(xid),
            table,
            op,
            pk,
            _trim(row),
            _trim(image),
            digest(row),
            digest(old),
            old_key,
            max(nesting(row), nesting(old)) > DEEP,
        )

    @property
    def key_changed(self) -> bool:
        return self.op == "update" and self.old_key != self.pk


def _trim(image: dict[str, Any] | None) -> dict[str, Any] | None:
    if image is None:
        return None
    return {k: v for k, v in image.items() if k not in ("payload", "title", "name", "doc", "big")}
