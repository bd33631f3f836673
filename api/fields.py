"""Fields: one column of a resource, how its values are checked, parsed and written as JSON.

The kind, nullability, length and default of a field come from the SQLAlchemy column (declared
in a model or reflected from the database); a resource declaration adds what the column type
cannot say (the ranges its CHECK constraints enforce).

A column of a type not listed in `Kind` is "other": served as JSON when its value is JSON-shaped
and as text otherwise, never written, filtered or sorted, since the API could not check a value
for it (the database would be the first to see a bad one).
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import sqlalchemy as sa

Kind = Literal["text", "integer", "numeric", "float", "timestamp", "date", "boolean", "uuid", "json", "other"]
# Kinds a filter can compare and a sort can order: json has no useful order, "other" no parser.
COMPARABLE: frozenset[str] = frozenset(
    {"text", "integer", "numeric", "float", "timestamp", "date", "boolean", "uuid"}
)
# A longer decimal string is no value a client meant; Postgres numeric stops at 131072 digits anyway.
MAX_NUMERIC_TEXT = 1000
# Decimal("1e999999999") is integral, and int() of it would build a billion-digit number.
MAX_INTEGER_EXPONENT = 20

_INT_RANGES = {
    sa.SmallInteger: (-(2**15), 2**15 - 1),
    sa.BigInteger: (-(2**63), 2**63 - 1),
    sa.Integer: (-(2**31), 2**31 - 1),
}
_INTEGER = re.compile(r"[+-]?[0-9]{1,20}")
# Checked in order: Float is a Numeric, and Enum, like every string type, a String.
_KINDS: tuple[tuple[type[Any], Kind], ...] = (
    (sa.Boolean, "boolean"),
    (sa.Integer, "integer"),
    (sa.Float, "float"),
    (sa.Numeric, "numeric"),
    (sa.String, "text"),
    (sa.DateTime, "timestamp"),
    (sa.Date, "date"),
    (sa.Uuid, "uuid"),
    (sa.JSON, "json"),
)


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
    type_name: str = ""  # the column's SQL type, for messages and the OpenAPI document
    naive: bool = False  # a `timestamp` without time zone: values are stored as UTC wall time

    @classmethod
    def from_column(cls, column: sa.Column[Any], limits: Limits | None) -> Field:
        kind = kind_of(column.type)
        bounds = _int_range(column.type) if kind == "integer" else None
        lo, hi = bounds or (None, None)
        length = getattr(column.type, "length", None) if kind == "text" else None
        declared = limits or Limits()
        return cls(
            name=column.name,
            kind=kind,
            nullable=bool(column.nullable),
            writable=limits is not None and kind != "other",
            has_default=column.server_default is not None or column.default is not None,
            min_length=declared.min_length,
            max_length=declared.max_length if declared.max_length is not None else length,
            minimum=max(v for v in (declared.minimum, lo) if v is not None) if lo is not None else None,
            maximum=min(v for v in (declared.maximum, hi) if v is not None) if hi is not None else None,
            bounds=bounds,
            type_name=_type_name(column.type),
            naive=kind == "timestamp" and not getattr(column.type, "timezone", True),
        )

    @property
    def required_on_create(self) -> bool:
        return not (self.nullable or self.has_default)

    @property
    def comparable(self) -> bool:
        return self.kind in COMPARABLE

    def from_json(self, value: Any) -> Any:
        """The value of a JSON body member, checked; raises FieldError."""
        if value is None:
            if self.nullable:
                # SQL NULL, also for json columns (whose type would otherwise bind the JSON `null`).
                return sa.null() if self.kind == "json" else None
            raise FieldError("may not be null")
        if self.kind == "text":
            if not isinstance(value, str):
                raise FieldError("must be a string")
            return self._text(value)
        if self.kind == "integer":
            return self._integer(_whole(value))
        if self.kind == "boolean":
            if not isinstance(value, bool):
                raise FieldError("must be true or false")
            return value
        if self.kind == "json":
            return value
        if self.kind in ("numeric", "float"):
            return self._number(value)
        if not isinstance(value, str):
            raise FieldError(f"must be a {_FORMATS.get(self.kind, 'text')} string")
        return self._parse(value)

    def from_query(self, text: str) -> Any:
        """The value of a query parameter (or a key in a URL), checked; raises FieldError."""
        if self.kind == "integer":
            if not _INTEGER.fullmatch(text):
                raise FieldError(f"{text!r} is not an integer")
            value = int(text)
            # Filters compare, so any value the column type holds is fair; SQL binds it as that type.
            lo, hi = self.bounds or (None, None)
            if not _in_range(value, lo, hi):
                raise FieldError(f"{value} is out of range")
            return value
        if self.kind in ("numeric", "float"):
            return self._number(text)
        if self.kind == "boolean":
            return parse_bool(text)
        return self._parse(text)

    def to_json(self, value: Any) -> Any:
        """The value as JSON: exact numbers, ISO 8601 dates, and text for what JSON cannot hold."""
        if isinstance(value, datetime | date):
            return value.isoformat()
        if isinstance(value, Decimal | float) and not math.isfinite(value):
            return str(value).replace("inf", "Infinity")  # as Postgres's to_jsonb writes them
        if isinstance(value, uuid.UUID) or (self.kind == "other" and not _is_json(value)):
            return str(value)
        return value

    def _parse(self, text: str) -> Any:
        """Text (a query parameter, a key, a scope) as a value of a string-shaped kind."""
        if self.kind == "uuid":
            try:
                return uuid.UUID(text)
            except ValueError:
                raise FieldError(f"{text[:40]!r} is not a UUID") from None
        if self.kind == "date":
            try:
                return date.fromisoformat(text)
            except ValueError:
                raise FieldError(f"{text[:40]!r} is not an ISO 8601 date") from None
        if self.kind == "timestamp":
            value = _timestamp(text)
            return value.astimezone(UTC).replace(tzinfo=None) if self.naive else value
        return _clean(text)  # a filter or key compares: the length limits bind writes only

    def _number(self, value: Any) -> Decimal | float:
        # A string is accepted too: JavaScript clients cannot hold every numeric as a number.
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
            raise FieldError("must be a number")
        if isinstance(value, str):
            value = _decimal(value)
        if not (value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)):
            raise FieldError("must be a finite number")
        if self.kind == "float":
            number = float(value)
            if not math.isfinite(number):
                raise FieldError("is out of range")
            return number
        return Decimal(value) if not isinstance(value, float) else Decimal(str(value))

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


_POSTGRES = sa.create_engine("postgresql+psycopg://").dialect  # names types; never connects
_FORMATS = {"timestamp": "date-time", "date": "date", "uuid": "UUID"}


def kind_of(type_: sa.types.TypeEngine[Any]) -> Kind:
    """The API's kind for a column type; "other" for any type it has no parser for."""
    for cls, kind in _KINDS:
        if isinstance(type_, cls):
            return kind
    return "other"


def parse_bool(text: str) -> bool:
    if text in ("true", "false"):
        return text == "true"
    raise FieldError(f"{text!r} is not true or false")


def _whole(value: Any) -> int:
    """A JSON number that is a whole number ("12.0" included); true is not a page count."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise FieldError("must be an integer")
    if isinstance(value, int):
        return value
    if not _integral(Decimal(value)):
        raise FieldError("must be an integer")
    return int(value)


def _integral(value: Decimal) -> bool:
    return (
        value.is_finite() and value.adjusted() <= MAX_INTEGER_EXPONENT and value == value.to_integral_value()
    )


def _decimal(text: str) -> Decimal:
    try:
        if len(text) > MAX_NUMERIC_TEXT:
            raise InvalidOperation
        return Decimal(text.strip())
    except InvalidOperation:
        raise FieldError(f"{text[:40]!r} is not a number") from None


def _is_json(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_json(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool | dict)


def _type_name(type_: sa.types.TypeEngine[Any]) -> str:
    try:
        return str(type_.compile(dialect=_POSTGRES))
    except Exception:  # a reflected type Postgres's dialect cannot name back (NullType)
        return type(type_).__name__.lower()


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


def _int_range(type_: Any) -> tuple[int, int]:
    for cls, bounds in _INT_RANGES.items():
        if isinstance(type_, cls):
            return bounds
    raise TypeError(f"unsupported integer type {type_!r}")
