"""Subscription filters: a small JSON vocabulary, validated against the table, run in memory.

`{"owner": {"eq": "alice"}, "num_pages": {"gt": 100}}` is an AND of conditions. Client text never
reaches SQL: filters are evaluated on the event's row images in Python.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from rowcast.notifier.like import Like, LikeSyntaxError

OPERATORS = ("eq", "neq", "lt", "lte", "gt", "gte", "in", "is_null", "like")
MAX_CONDITIONS = 32
MAX_IN_VALUES = 1000

# Postgres pg_type.typcategory -> how values of that column compare.
NUMERIC, STRING, BOOLEAN, DATETIME, OTHER = "N", "S", "B", "D", "X"


class FilterError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")

Predicate = Callable[[Mapping[str, Any]], bool]


def _coerce(category: str, column: str, value: Any) -> Any:
    """The filter value as it compares against the row's JSON value; FilterError if it can't."""
    if category == NUMERIC:
        # Row values are int or Decimal (rowcast.jsonexact), so operands compare as exact numbers.
        if isinstance(value, str) and _JSON_NUMBER.fullmatch(value):
            value = Decimal(value)  # a number as text: how rowcast.js sends one a double can't hold
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise FilterError("bad_value", f"{column}: expected a number, got {value!r}")
        if isinstance(value, float):
            # From a frame parsed with json.loads: repr is the shortest text of that float, the
            # text the client wrote unless it wrote more digits than a float holds.
            value = Decimal(repr(value))
        if isinstance(value, Decimal) and not value.is_finite():
            raise FilterError("bad_value", f"{column}: expected a finite number, got {value}")
        return value
    if category == BOOLEAN:
        if not isinstance(value, bool):
            raise FilterError("bad_value", f"{column}: expected true or false, got {value!r}")
        return value
    if not isinstance(value, str):
        raise FilterError("bad_value", f"{column}: expected a string, got {value!r}")
    if category == DATETIME:
        return _parse_time(column, value)
    return value


def _parse_time(column: str, value: str) -> datetime | date:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise FilterError("bad_value", f"{column}: expected an ISO 8601 time, got {value!r}") from None
    return parsed


def _row_value(category: str, raw: Any) -> Any:
    if category == DATETIME and isinstance(raw, str):
        try:
            return datetime.fromisoformat(raw)
        except ValueError:
            return raw
    return raw


def _compare(op: str, a: Any, b: Any) -> bool:
    try:
        if op == "lt":
            return bool(a < b)
        if op == "lte":
            return bool(a <= b)
        if op == "gt":
            return bool(a > b)
        return bool(a >= b)
    except TypeError:  # e.g. naive vs aware datetimes: SQL would not match either
        return False


def _predicate(column: str, category: str, op: str, value: Any) -> Predicate:
    if op == "is_null":
        if not isinstance(value, bool):
            raise FilterError("bad_value", f"{column}: is_null takes true or false")
        return (lambda r: r.get(column) is None) if value else (lambda r: r.get(column) is not None)
    if op == "in":
        if not isinstance(value, list) or len(value) > MAX_IN_VALUES:
            raise FilterError("bad_value", f"{column}: in takes a list of at most {MAX_IN_VALUES} values")
        options = [_coerce(category, column, v) for v in value]
        return lambda r: (v := _row_value(category, r.get(column))) is not None and v in options
    if op == "like":
        if category != STRING or not isinstance(value, str):
            raise FilterError("bad_value", f"{column}: like takes a pattern and applies to text columns")
        try:
            like = Like(value)
        except LikeSyntaxError as exc:
            raise FilterError("bad_value", f"{column}: {exc}") from None
        return lambda r: isinstance(v := r.get(column), str) and like.match(v)
    if category in (BOOLEAN, OTHER) and op not in ("eq", "neq"):
        raise FilterError("bad_value", f"{column}: {op} does not apply to this column's type")
    want = _coerce(category, column, value)
    if op == "eq":
        return lambda r: (v := _row_value(category, r.get(column))) is not None and v == want
    if op == "neq":
        return lambda r: (v := _row_value(category, r.get(column))) is not None and v != want
    return lambda r: (v := _row_value(category, r.get(column))) is not None and _compare(op, v, want)


@dataclass(frozen=True, slots=True)
class Filter:
    predicates: tuple[Predicate, ...] = ()
    columns: tuple[str, ...] = ()  # the columns it reads
    categories: tuple[str, ...] = ()  # their type categories when compiled (a DDL may change them)

    @property
    def depends_on(self) -> dict[str, str]:
        """column -> the type category the predicates were compiled for."""
        return dict(zip(self.columns, self.categories, strict=False))

    def matches(self, row: Mapping[str, Any] | None) -> bool:
        if row is None:
            return False
        return all(p(row) for p in self.predicates)

    @classmethod
    def compile(cls, where: Any, columns: Mapping[str, str]) -> Filter:
        """Validate `where` against `columns` (name -> type category); raises FilterError."""
        if where is None:
            return EVERYTHING
        if not isinstance(where, dict):
            raise FilterError("bad_frame", "where must be an object of {column: {operator: value}}")
        predicates: list[Predicate] = []
        for column, conditions in where.items():
            if column not in columns:
                raise FilterError("unknown_column", f"unknown column: {column}")
            if not isinstance(conditions, dict) or not conditions:
                raise FilterError("bad_frame", f"{column}: expected {{operator: value}}")
            for op, value in conditions.items():
                if op not in OPERATORS:
                    raise FilterError(
                        "unknown_operator", f"unknown operator: {op} (use one of {', '.join(OPERATORS)})"
                    )
                predicates.append(_predicate(column, columns[column], op, value))
        if len(predicates) > MAX_CONDITIONS:
            raise FilterError("bad_frame", f"at most {MAX_CONDITIONS} conditions")
        return cls(tuple(predicates), tuple(where), tuple(columns[c] for c in where))


# The filter of a subscription without `where` (immutable: one shared by all of them).
EVERYTHING = Filter()
