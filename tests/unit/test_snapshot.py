"""Cursor arithmetic: a cursor is a Postgres snapshot; advancing it must never hide a change."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rowcast.notifier.snapshot import BadCursor, Snapshot


def test_parse_and_format_round_trip() -> None:
    snap = Snapshot.parse("10:20:12,15")
    assert (snap.xmin, snap.xmax, snap.xip) == (10, 20, frozenset({12, 15}))
    assert str(snap) == "10:20:12,15"
    assert str(Snapshot.parse("7:7:")) == "7:7:"


@pytest.mark.parametrize("text", ["", "abc", "1:2", "5:3:", "1:9:12", "1:2:x", "-1:2:", "1:5:1,,2"])
def test_malformed_or_inconsistent_cursors_are_refused(text: str) -> None:
    with pytest.raises(BadCursor):
        Snapshot.parse(text)


def test_visibility_follows_postgres_rules() -> None:
    snap = Snapshot.parse("10:20:12,15")
    assert snap.visible(9) and snap.visible(11) and snap.visible(19)
    assert not snap.visible(12) and not snap.visible(15) and not snap.visible(20)


@st.composite
def snapshot_pair(draw: st.DrawFn) -> tuple[Snapshot, Snapshot, int]:
    """An earlier and a later snapshot of one history, and a cut-off xid."""
    horizon = draw(st.integers(5, 60))
    commit_order = draw(st.permutations(range(1, horizon)))
    early_n = draw(st.integers(0, len(commit_order)))
    late_n = draw(st.integers(early_n, len(commit_order)))

    def snap(committed: set[int], started_below: int) -> Snapshot:
        running = {x for x in range(1, started_below) if x not in committed}
        xmin = min(running) if running else started_below
        return Snapshot(xmin, started_below, frozenset(running))

    early_set = set(commit_order[:early_n])
    late_set = set(commit_order[:late_n])
    early = snap(early_set, max(early_set, default=0) + 1)
    late = snap(late_set, max(late_set | {early.xmax - 1}, default=0) + 1)
    upto = draw(st.integers(0, horizon))
    return early, late, upto


@given(snapshot_pair())
def test_advanced_sees_exactly_the_union_up_to_the_cut(pair: tuple[Snapshot, Snapshot, int]) -> None:
    early, late, upto = pair
    result = early.advanced(late, upto)
    for x in range(0, late.xmax + 5):
        expected = early.visible(x) or (x <= min(upto, late.xmax - 1) and late.visible(x))
        assert result.visible(x) == expected, (early, late, upto, x)
    assert Snapshot.parse(str(result)) == result


def test_subscriptions_starting_from_one_cursor_share_one_snapshot() -> None:
    """Every subscription keeps its starting snapshot: the clients of one moment share it."""
    text = "100:105:101,103"
    assert Snapshot.parse(text) is Snapshot.parse("100:105:101,103")
    assert Snapshot.parse(text) == Snapshot(100, 105, frozenset({101, 103}))
    long_text = "1:100000:" + ",".join(str(x) for x in range(2, 2_000, 2))
    assert len(long_text) > 200 and Snapshot.parse(long_text) is not Snapshot.parse(long_text)
    with pytest.raises(BadCursor):
        Snapshot.parse("5:4:")
