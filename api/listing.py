"""The list query string: `limit`, `offset`, `sort` and filters, parsed into SQLAlchemy clauses.

`owner=alice` filters on equality, `num_pages.gt=100` with an operator. Only the resource's
whitelisted columns are accepted, and every value reaches SQL as a bound parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from multidict import MultiMapping
from rowcast.api.errors import bad_query
from rowcast.api.fields import Field, FieldError, parse_bool
from rowcast.api.resources import Resource

OPERATORS = ("eq", "neq", "lt", "lte", "gt", "gte", "like", "in", "is_null")
RESERVED = ("limit", "offset", "sort")
DEFAULT_LIMIT = 50
MAX_OFFSET = 2**31 - 1
MAX_CONDITIONS = 32
MAX_IN_VALUES = 1000
# Postgres runs LIKE by backtracking over `%`: '%a_a_…!%' costs O(value x pattern) per row, 80 ms
# on one 10 kB value at 4,000 pattern characters. Bounded like the notifier's (notifier/like.py).
MAX_LIKE_PATTERN = 64


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    value: Any


@dataclass(frozen=True)
class ListQuery:
    limit: int
    offset: int
    conditions: tuple[Condition, ...]
    sort: tuple[tuple[str, bool], ...]  # (column, descending)


def parse(resource: Resource, query: MultiMapping[str], max_page_size: int) -> ListQuery:
    """The list request's query string, checked; 400 with a clear message if anything is off."""
    limit = _integer(query, "limit", min(DEFAULT_LIMIT, max_page_size), max_page_size)
    offset = _integer(query, "offset", 0, MAX_OFFSET)
    conditions = tuple(_condition(resource, key, raw) for key, raw in query.items() if key not in RESERVED)
    if len(conditions) > MAX_CONDITIONS:
        raise bad_query(f"at most {MAX_CONDITIONS} filter conditions")
    return ListQuery(limit, offset, conditions, _sort(resource, _single(query, "sort")))


def where(resource: Resource, conditions: tuple[Condition, ...]) -> list[sa.ColumnElement[bool]]:
    return [_clause(resource.table.c[c.column], c.op, c.value) for c in conditions]


def order_by(resource: Resource, sort: tuple[tuple[str, bool], ...]) -> list[sa.ColumnElement[Any]]:
    columns = resource.table.c
    return [columns[name].desc() if desc else columns[name].asc() for name, desc in sort]


def _single(query: MultiMapping[str], name: str) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise bad_query(f"give {name} at most once")
    return values[0] if values else None


def _integer(query: MultiMapping[str], name: str, default: int, maximum: int) -> int:
    raw = _single(query, name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise bad_query(f"{name} must be a whole number from 0 to {maximum}, not {raw[:40]!r}")
    value = int(raw)
    if value > maximum:
        raise bad_query(f"{name} must be at most {maximum}, not {value}")
    return value


def _sort(resource: Resource, raw: str | None) -> tuple[tuple[str, bool], ...]:
    terms: list[tuple[str, bool]] = []
    for term in raw.split(",") if raw is not None else ():
        name = term.removeprefix("-")
        if name not in resource.sort_fields:
            allowed = ", ".join(resource.sort_fields)
            raise bad_query(f"cannot sort by {name[:60]!r}; sortable columns: {allowed}")
        if any(name == seen for seen, _ in terms):
            raise bad_query(f"sort names {name!r} twice")
        terms.append((name, term.startswith("-")))
    for key in (c.name for c in resource.keys):
        if all(name != key for name, _ in terms):
            terms.append((key, False))  # a total order, so pages never overlap or skip rows
    return tuple(terms)


def _condition(resource: Resource, key: str, raw: str) -> Condition:
    name, _, op = key.partition(".")
    op = op or "eq"
    field = resource.filter_fields.get(name)
    if field is None:
        allowed = ", ".join(resource.filter_fields)
        raise bad_query(f"unknown query parameter {key[:60]!r}; filterable columns: {allowed}")
    if op not in OPERATORS:
        raise bad_query(f"unknown operator {op[:40]!r} in {key[:60]!r}; use one of {', '.join(OPERATORS)}")
    try:
        return Condition(name, op, _value(field, op, raw))
    except FieldError as exc:
        raise bad_query(f"{key}: {exc}") from None


def _value(field: Field, op: str, raw: str) -> Any:
    if op == "is_null":
        return parse_bool(raw)
    if op == "in":
        values = raw.split(",")
        if len(values) > MAX_IN_VALUES:
            raise FieldError(f"in takes at most {MAX_IN_VALUES} values")
        return [field.from_query(v) for v in values]
    if op == "like":
        if field.kind != "text":
            raise FieldError("like applies to text columns only")
        pattern = field.from_query(raw)
        if len(pattern) > MAX_LIKE_PATTERN:
            raise FieldError(f"a like pattern has at most {MAX_LIKE_PATTERN} characters")
        if (len(pattern) - len(pattern.rstrip("\\"))) % 2:
            raise FieldError("a like pattern may not end with a lone backslash (the escape character)")
        return pattern
    if field.kind == "boolean" and op not in ("eq", "neq"):
        raise FieldError(f"{op} does not apply to true/false columns")
    return field.from_query(raw)


def _clause(column: sa.Column[Any], op: str, value: Any) -> sa.ColumnElement[bool]:
    if op == "is_null":
        return column.is_(None) if value else column.is_not(None)
    if op == "in":
        return column.in_(value)
    if op == "like":
        return column.like(value)
    comparisons = {
        "eq": column.__eq__,
        "neq": column.__ne__,
        "lt": column.__lt__,
        "lte": column.__le__,
        "gt": column.__gt__,
        "gte": column.__ge__,
    }
    clause: sa.ColumnElement[bool] = comparisons[op](value)
    return clause
