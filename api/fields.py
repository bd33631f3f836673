"""Fields: one column of a resource, how its values are checked, parsed and written as JSON.

The kind, nullability, length and default of a field come from the SQLAlchemy column; a resource
declaration adds what the column type cannot say (the ranges its CHECK constraints enforce).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa

Kind = Literal["text", "integer", "timestamp", "boolean"]

_INT_RANGES = {
    sa.SmallInteger: (-(2**15), 2**15 - 1),
    sa.BigInteger: (-(2**63), 2**63 - 1),
    sa.Integer: (-(2**31), 2**31 - 1),
}
_INTEGER = re.compile(r"[+-]?[0-9]{1,20}")


class FieldError(ValueError):
    """The value does not fit the field; the message says why, for the client."""


@dataclass(frozen=True)
class Limits:
    """What a resource declares about a writable column beyond its type (mirror CHECKs here)."""

    min_length: int = 0
    max_length: int | None = None
    minimum: int | None = None
    maximum: int | None = None


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    nullable: bool
    writable: bool
    has_default: bool  # the database fills it when a create omits it
    min_length: int = 0
    max_length: int | None = None
    minimum: int | None = None  # for writes: the declared range within the column type's
    maximum: int | None = None
    bounds: tuple[int, int] | None = None  # what the integer column type can hold

    @classmethod
    def from_column(cls, column: sa.Column[Any], limits: Limits | None) -> Field:
        kind = _kind(column)
        bounds = _int_range(column.type) if kind == "integer" else None
        lo, hi = bounds or (None, None)
        length = getattr(column.type, "length", None) if kind == "text" else None
        declared = limits or Limits()
        return cls(
            name=column.name,
            kind=kind,
            nullable=bool(column.nullable),
            writable=limits is not None,
            has_default=column.server_default is not None or column.default is not None,
            min_length=declared.min_length,
            max_length=declared.max_length if declared.max_length is not None else length,
            minimum=max(v for v in (declared.minimum, lo) if v is not None) if lo is not None else None,
            maximum=min(v for v in (declared.maximum, hi) if v is not None) if hi is not None else None,
            bounds=bounds,
        )

    @property
    def required_on_create(self) -> bool:
        return not (self.nullable or self.has_default)

    def from_json(self, value: Any) -> Any:
        """The value of a JSON body member, checked; raises FieldError."""
        if value is None:
            if self.nullable:
                return None
            raise FieldError("may not be null")
        if self.kind == "text":
            if not isinstance(value, str):
                raise FieldError("must be a string")
            return self._text(value)
        if self.kind == "integer":
            # bool is an int subclass in Python, but true is not a page count.
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FieldError("must be an integer")
            if isinstance(value, float):
                if not value.is_integer():
                    raise FieldError("must be an integer")
                value = int(value)
            return self._integer(value)
        if self.kind == "boolean":
            if not isinstance(value, bool):
                raise FieldError("must be true or false")
            return value
        if not isinstance(value, str):
            raise FieldError("must be a date-time string")
        return _timestamp(value)

    def from_query(self, text: str) -> Any:
        """The value of a query parameter, checked; raises FieldError."""
        if self.kind == "text":
            return _clean(text)
        if self.kind == "integer":
            if not _INTEGER.fullmatch(text):
                raise FieldError(f"{text!r} is not an integer")
            value = int(text)
            # Filters compare, so any value the column type holds is fair; SQL binds it as that type.
            lo, hi = self.bounds or (None, None)
            if not _in_range(value, lo, hi):
                raise FieldError(f"{value} is out of range")
            return value
        if self.kind == "boolean":
            return parse_bool(text)
        return _timestamp(text)

    def to_json(self, value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        return value

    def _text(self, value: str) -> str:
        value = _clean(value)
        if len(value) < self.min_length:
            raise FieldError(f"must be at least {self.min_length} character(s)")
        if self.max_length is not None and len(value) > self.max_length:
            raise FieldError(f"must be at most {self.max_length} characters")
        return value

    def _integer(self, value: int) -> int:
        if not _in_range(value, self.minimum, self.maximum):
            raise FieldError(f"must be between {self.minimum} and {self.maximum}")
        return value


def parse_bool(text: str) -> bool:
    if text in ("true", "false"):
        return text == "true"
    raise FieldError(f"{text!r} is not true or false")


def _clean(value: str) -> str:
    # Postgres text cannot hold NUL, and a lone surrogate cannot be encoded as UTF-8.
    if "\x00" in value:
        raise FieldError("may not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FieldError("is not valid Unicode text") from None
    return value


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise FieldError(f"{text[:40]!r} is not an ISO 8601 date-time") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _in_range(value: int, lo: int | None, hi: int | None) -> bool:
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def _kind(column: sa.Column[Any]) -> Kind:
    if isinstance(column.type, sa.Boolean):
        return "boolean"
    if isinstance(column.type, sa.Integer):
        return "integer"
    if isinstance(column.type, sa.String):
        return "text"
    if isinstance(column.type, sa.DateTime):
        return "timestamp"
    raise TypeError(f"column {column.name!r}: type {column.type!r} is not supported by the API")


def _int_range(type_: Any) -> tuple[int, int]:
    for cls, bounds in _INT_RANGES.items():
        if isinstance(type_, cls):
            return bounds
    raise TypeError(f"unsupported integer type {type_!r}")
