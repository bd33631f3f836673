"""Filters: validated against the table's columns, evaluated in memory like SQL would."""

from __future__ import annotations

import pytest
from rowcast.notifier.filters import BOOLEAN, DATETIME, NUMERIC, STRING, Filter, FilterError

COLUMNS = {
    "id": NUMERIC,
    "title": STRING,
    "owner": STRING,
    "num_pages": NUMERIC,
    "done": BOOLEAN,
    "at": DATETIME,
}
ROW = {
    "id": 1,
    "title": "Dune_2",
    "owner": "alice",
    "num_pages": 412,
    "done": False,
    "at": "2026-01-02T10:00:00+00:00",
}


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"owner": {"eq": "alice"}}, True),
        ({"owner": {"neq": "alice"}}, False),
        ({"num_pages": {"gt": 400, "lte": 412}}, True),
        ({"num_pages": {"lt": 412}}, False),
        ({"num_pages": {"gte": 412}}, True),
        ({"owner": {"in": ["bob", "alice"]}}, True),
        ({"owner": {"is_null": True}}, False),
        ({"owner": {"is_null": False}}, True),
        ({"title": {"like": "Du%"}}, True),
        ({"title": {"like": "Dune\\__"}}, True),
        ({"title": {"like": "dune%"}}, False),
        ({"title": {"like": "D_ne%"}}, True),
        ({"done": {"eq": False}}, True),
        ({"at": {"gt": "2026-01-02T09:00:00+00:00"}}, True),
        ({"at": {"lt": "2026-01-02T11:30:00+01:00"}}, True),
        ({"at": {"lt": "2026-01-02T11:00:00+01:00"}}, False),
        ({"owner": {"eq": "alice"}, "num_pages": {"gt": 500}}, False),
        (None, True),
    ],
)
def test_conditions_match_like_sql(where: object, expected: bool) -> None:
    assert Filter.compile(where, COLUMNS).matches(ROW) is expected


def test_null_compares_false_like_sql() -> None:
    row = {**ROW, "owner": None}
    assert not Filter.compile({"owner": {"neq": "bob"}}, COLUMNS).matches(row)
    assert not Filter.compile({"owner": {"eq": "bob"}}, COLUMNS).matches(row)
    assert Filter.compile({"owner": {"is_null": True}}, COLUMNS).matches(row)


@pytest.mark.parametrize(
    ("where", "code", "fragment"),
    [
        ({"nope": {"eq": 1}}, "unknown_column", "nope"),
        ({"owner": {"regex": "a"}}, "unknown_operator", "regex"),
        ({"num_pages": {"gt": "many"}}, "bad_value", "num_pages"),
        ({"num_pages": {"eq": True}}, "bad_value", "num_pages"),
        ({"owner": {"in": "alice"}}, "bad_value", "owner"),
        ({"owner": {"is_null": "yes"}}, "bad_value", "is_null"),
        ({"num_pages": {"like": "4%"}}, "bad_value", "like"),
        ({"done": {"gt": True}}, "bad_value", "done"),
        ({"at": {"gt": "yesterday"}}, "bad_value", "ISO"),
        ({"owner": "alice"}, "bad_frame", "owner"),
        (["owner"], "bad_frame", "where"),
    ],
)
def test_bad_filters_name_what_is_wrong(where: object, code: str, fragment: str) -> None:
    with pytest.raises(FilterError) as info:
        Filter.compile(where, COLUMNS)
    assert info.value.code == code and fragment in str(info.value)
