"""The exact JSON codec: numbers keep Postgres's text, output is always RFC 8259 JSON."""

from __future__ import annotations

import copy
import math
import pickle
import sys
from decimal import Decimal

import pytest

from rowcast import jsonexact
from rowcast.jsonexact import MAX_DEPTH, Number, TooDeep

BIG = "1234567890.123456789012345678901234567890"
DIGITS_400 = "9" * 400


@pytest.mark.parametrize(
    "text",
    [BIG, DIGITS_400, "1e-400", "0.0000001", "1.50", "-0.000", "1E+2", "-12.5e3", "0.1"],
)
def test_numbers_round_trip_byte_for_byte(text: str) -> None:
    doc = '{"n":' + text + ',"a":[' + text + "]}"
    parsed = jsonexact.loads(doc)
    assert parsed["n"] == Decimal(text)
    assert jsonexact.dumps(parsed) == doc


def test_regression_numeric_beyond_float_is_not_rounded() -> None:
    # Was 1234567890.1234567, inf and 0.0 through json.loads.
    big, huge, tiny = jsonexact.loads(f"[{BIG}, {DIGITS_400}.5, 1e-400]")
    assert isinstance(big, Decimal) and str(big) == BIG
    assert huge == Decimal(DIGITS_400 + ".5") and huge.is_finite()
    assert tiny == Decimal("1e-400") and tiny != 0


def test_integers_are_int_and_exact() -> None:
    assert jsonexact.loads(f"[{DIGITS_400}, -9223372036854775808]") == [int(DIGITS_400), -(2**63)]
    assert type(jsonexact.loads("7")) is int


def test_integers_beyond_python_text_limit_stay_exact() -> None:
    digits = "1" + "0" * (sys.get_int_max_str_digits() + 10)
    value = jsonexact.loads(f'{{"n": {digits}}}')["n"]
    assert value == Decimal(digits)
    assert jsonexact.dumps(value) == digits


def test_number_is_a_decimal_that_prints_its_text() -> None:
    n = jsonexact.loads("0.0000001")
    assert isinstance(n, Number) and isinstance(n, Decimal)
    assert str(n) == "0.0000001" and n + 1 == Decimal("1.0000001")
    assert hash(n) == hash(Decimal("1e-7"))
    assert str(pickle.loads(pickle.dumps(n))) == "0.0000001"  # noqa: S301 -- our own bytes
    assert str(copy.deepcopy(n)) == "0.0000001"


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}'])
def test_non_json_tokens_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        jsonexact.loads(text)


@pytest.mark.parametrize(
    "value", [math.inf, -math.inf, math.nan, Decimal("Infinity"), Decimal("-Infinity"), Decimal("NaN")]
)
def test_never_writes_nan_or_infinity(value: object) -> None:
    with pytest.raises(ValueError):
        jsonexact.dumps({"v": [value]})


def test_plain_decimal_and_float_write_as_numbers() -> None:
    assert jsonexact.dumps([Decimal("1.10"), 0.5, 3]) == "[1.10,0.5,3]"


def test_text_is_written_unescaped_and_valid() -> None:
    text = 'é ☃ \u2028 \x01 "q" \\'
    assert jsonexact.loads(jsonexact.dumps(text)) == text
    assert "é☃"[0] in jsonexact.dumps(text)


def test_regression_deep_nesting_raises_too_deep_not_recursion_error() -> None:
    deep = '{"j":' + "[" * 1200 + "]" * 1200 + "}"
    with pytest.raises(TooDeep) as info:
        jsonexact.loads(deep)
    assert info.value.depth == 1201
    assert isinstance(info.value, ValueError)


def test_depth_limit_is_exact_and_ignores_brackets_in_strings() -> None:
    at_limit = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert jsonexact.depth(at_limit) == MAX_DEPTH
    jsonexact.loads(at_limit)
    with pytest.raises(TooDeep):
        jsonexact.loads("[" + at_limit + "]")
    brackets_in_text = '["' + "[{" * 2000 + '\\"["]'
    assert jsonexact.loads(brackets_in_text) == ["[{" * 2000 + '"[']


def test_deep_documents_raise_too_deep_from_a_deep_stack() -> None:
    def nest(n: int) -> object:
        return nest(n - 1) if n else jsonexact.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)

    try:
        nest(sys.getrecursionlimit() - 200)
    except TooDeep:
        pass  # the caller's stack left too little room: still the codec's error, not RecursionError
