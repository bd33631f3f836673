"""Cursors are Postgres snapshots; this is their arithmetic, done in Python without a query.

A snapshot `xmin:xmax:xip` says which transactions had committed: every xid < xmin, and every xid
in [xmin, xmax) that is not in xip. A cursor is a snapshot whose visible transactions' changes the
client already has, so resuming replays exactly the committed changes it does not see.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

_FORMAT = re.compile(r"^(\d{1,20}):(\d{1,20}):((?:\d{1,20})(?:,\d{1,20}){0,9999})?$")


class BadCursor(ValueError):
    """The cursor is not one rowcast issued."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    xmin: int
    xmax: int
    xip: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        if isinstance(text, str) and len(text) <= _SHARED_LEN:
            return _parse_shared(text)
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> Snapshot:
        match = _FORMAT.match(text) if isinstance(text, str) and len(text) < 200_000 else None
        if not match:
            raise BadCursor("cursor is malformed")
        xmin, xmax = int(match.group(1)), int(match.group(2))
        xip = frozenset(int(x) for x in match.group(3).split(",")) if match.group(3) else frozenset()
        if xmin > xmax or any(not xmin <= x < xmax for x in xip):
            raise BadCursor("cursor is inconsistent")
        return cls(xmin, xmax, xip)

    def __str__(self) -> str:
        return f"{self.xmin}:{self.xmax}:{','.join(map(str, sorted(self.xip)))}"

    def visible(self, xid: int) -> bool:
        """Whether the transaction `xid` had committed (or aborted) when this snapshot was taken."""
        if xid < self.xmin:
            return True
        if xid >= self.xmax:
            return False
        return xid not in self.xip

    def sees_all_upto(self, xid: int) -> bool:
        """Whether every transaction with an xid up to `xid` had finished for this snapshot."""
        return xid < self.xmax and all(x > xid for x in self.xip)

    def covers(self, other: Snapshot) -> bool:
        """Whether every transaction `other` sees as finished, this one sees too."""
        return self.xmax >= other.xmax and not any(other.visible(x) for x in self.xip)

    def advanced(self, later: Snapshot, upto: int | None = None) -> Snapshot:
        """The cursor after delivering every change that `later` sees with xid <= `upto`.

        Visible in the result: what this cursor saw, plus what `later` saw up to `upto` (all of
        `later` when upto is None). Used when a page of changes ends mid-way through `later`.
        """
        if upto is None or upto >= later.xmax - 1:
            upto = later.xmax - 1
        xmax = max(self.xmax, upto + 1)

        def invisible(x: int) -> bool:
            return not self.visible(x) and not (x <= upto and later.visible(x))

        candidates: Iterable[int] = (
            *self.xip,
            *(x for x in later.xip if self.xmax <= x <= upto),
            *range(max(self.xmax, later.xmax), upto + 1),
        )
        xip = frozenset(x for x in candidates if x < xmax and invisible(x))
        xmin = min(xip) if xip else xmax
        return Snapshot(min(xmin, xmax), xmax, xip)


def pruned_past(snapshot: Snapshot, pruned_xid: int | None) -> bool:
    """Whether retention may have removed a change this snapshot had not seen."""
    return pruned_xid is not None and not snapshot.sees_all_upto(pruned_xid)


# Every subscription keeps the snapshot it started from, and the clients of one moment (a
# reconnect storm, a page load) start from the same few: they share one immutable object
# instead of a copy each. Short texts only, so the cache stays small whatever clients send.
_SHARED_LEN = 200


@lru_cache(maxsize=256)
def _parse_shared(text: str) -> Snapshot:
    return Snapshot._parse(text)
