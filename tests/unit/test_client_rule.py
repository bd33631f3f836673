"""The per-row rule of rowcast.client: duplicates and stale changes never reach the caller."""

from __future__ import annotations

from typing import Any

from rowcast.client import Change, RowRule


def change(id: int, op: str = "update", pk: Any = None, old: Any = None, table: str = "books") -> Change:
    pk = {"id": 1} if pk is None else pk
    return Change(
        id, "public", table, op, pk, {"id": pk["id"]} if pk else None, old, {}, "2026-01-01T00:00:00+00:00"
    )


def test_duplicates_and_older_changes_of_a_row_are_dropped() -> None:
    rule = RowRule()
    assert rule.admit(change(5))
    assert not rule.admit(change(5))  # the same change again (a resume replay)
    assert not rule.admit(change(3))  # older than what was applied
    assert rule.admit(change(7))


def test_rows_are_independent() -> None:
    rule = RowRule()
    assert rule.admit(change(9, pk={"id": 1}))
    assert rule.admit(change(4, pk={"id": 2}))  # a lower id is fine for another row


def test_truncate_clears_the_table_and_drops_earlier_changes_arriving_late() -> None:
    rule = RowRule()
    assert rule.admit(change(3, pk={"id": 1}))
    assert rule.admit(change(10, op="truncate", pk=None))
    assert not rule.admit(change(8, pk={"id": 2}))  # from before the truncate
    assert rule.admit(change(11, op="insert", pk={"id": 1}))
    assert not rule.admit(change(10, op="truncate", pk=None))
    assert rule.admit(change(5, pk={"id": 1}, table="authors"))  # other tables unaffected


def test_a_key_change_retires_the_old_key() -> None:
    rule = RowRule()
    assert rule.admit(change(5, pk={"id": 2}, old={"id": 1}))
    assert not rule.admit(change(4, pk={"id": 1}))  # a stale change of the row under its old key
