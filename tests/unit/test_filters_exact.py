"""Numeric filters compare exactly: row values are int/Decimal (rowcast.jsonexact), and so are operands."""

from __future__ import annotations

from decimal import Decimal

import pytest
from rowcast.notifier.filters import NUMERIC, Filter, FilterError

from rowcast import jsonexact

COLUMNS = {"price": NUMERIC}
ROW = jsonexact.loads('{"price": 0.1000000000000000000001}')


def test_regression_float_operand_compares_exactly_with_a_numeric_row() -> None:
    # As json.loads hands them over today (notifier/ws.py): 0.1 is the float nearest 0.1.
    assert Filter.compile({"price": {"gt": 0.1}}, COLUMNS).matches(ROW)
    assert not Filter.compile({"price": {"eq": 0.1}}, COLUMNS).matches(ROW)


@pytest.mark.parametrize(
    "operand",
    [
        jsonexact.loads("0.1000000000000000000001"),
        "0.1000000000000000000001",
        Decimal("1000000000000000000001e-22"),
    ],
)
def test_exact_operands_as_decimal_or_text(operand: object) -> None:
    assert Filter.compile({"price": {"eq": operand}}, COLUMNS).matches(ROW)
    assert Filter.compile({"price": {"in": [1, operand]}}, COLUMNS).matches(ROW)
    assert not Filter.compile({"price": {"lt": operand}}, COLUMNS).matches(ROW)


def test_huge_and_tiny_numbers_compare() -> None:
    huge = jsonexact.loads("9" * 400 + ".5")
    assert Filter.compile({"price": {"gt": 1e308}}, COLUMNS).matches({"price": huge})
    assert Filter.compile({"price": {"gt": 0}}, COLUMNS).matches({"price": jsonexact.loads("1e-400")})
    assert not Filter.compile({"price": {"gt": 0}}, COLUMNS).matches({"price": "NaN"})  # float NaN: a string


@pytest.mark.parametrize("operand", [float("inf"), float("nan"), Decimal("NaN"), "1e", "many", " 1"])
def test_non_numbers_are_refused(operand: object) -> None:
    with pytest.raises(FilterError):
        Filter.compile({"price": {"gt": operand}}, COLUMNS)
