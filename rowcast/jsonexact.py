"""Exact JSON: numbers keep the text Postgres wrote, output is always RFC 8259 JSON.

One codec for the notifier (event images, re-encoded views, filter operands) and the Python
client. Integers parse to `int`; every other number to `Number`, a `decimal.Decimal` that
remembers its source text and is written back byte-for-byte (never through a float, so
`1234567890.123456789012345678901234567890`, a 400-digit numeric or `1e-400` survive). `NaN` and
`Infinity` tokens are refused on input and never written (Postgres's `to_jsonb` already writes
float and numeric NaN/±Infinity as the strings "NaN", "Infinity", "-Infinity").

Parsing is depth-limited: a document nested deeper than `MAX_DEPTH` (valid in Postgres, whose
jsonb nests as deep as its stack allows) raises `TooDeep`, never RecursionError, whatever the
caller's stack depth.
"""

from __future__ import annotations

import functools
import re
from decimal import Decimal
from itertools import accumulate
from typing import Any

# simplejson: the C-accelerated codec that reads and writes Decimal as a JSON number both ways.
import simplejson

# Well below Python's recursion limit (1000, and the C parser and encoder recurse per level) even
# when called from deep in an aiohttp stack; deeper than any row we have seen in practice.
MAX_DEPTH = 512

# Python refuses int(text) beyond this many digits (sys.get_int_max_str_digits); numeric allows more.
_INT_DIGITS = 4300

# A JSON string (the unrolled form: linear, no backtracking), so brackets inside strings don't count.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS = re.compile(r"[\[\]{}]")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class TooDeep(ValueError):
    """The JSON document nests deeper than rowcast.jsonexact.MAX_DEPTH."""

    def __init__(self, depth: int | None = None) -> None:
        found = f" ({depth} levels)" if depth is not None else ""
        super().__init__(f"JSON nested deeper than {MAX_DEPTH} levels{found}")
        self.depth = depth


class Number(Decimal):
    """A JSON number that is not an integer: a Decimal whose str() is the text it was parsed from."""

    __slots__ = ("_text",)
    _text: str

    def __new__(cls, text: str) -> Number:
        self = Decimal.__new__(cls, text)
        self._text = text if isinstance(text, str) else Decimal.__str__(self)
        return self

    def __str__(self) -> str:
        return self._text  # what dumps() writes, byte for byte

    def __reduce__(self) -> tuple[type[Number], tuple[str]]:
        return (Number, (self._text,))

    def __copy__(self) -> Number:
        return self

    def __deepcopy__(self, memo: Any) -> Number:
        return self


def _integer(text: str) -> int | Number:
    # Only used on the retry for documents with integers Python will not convert from text.
    return int(text) if len(text) <= _INT_DIGITS else Number(text)


def depth(text: str) -> int:
    """How deep the document's arrays and objects nest (strings are skipped)."""
    brackets = _BRACKETS.findall(_STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def loads(text: str | bytes) -> Any:
    """Parse JSON exactly; ValueError if it is not JSON, TooDeep if it nests beyond MAX_DEPTH."""
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8")
    # Counting brackets is C-speed; only a document with more of them than the limit is measured
    # (about 1 ms for 44 kB holding 2,000 brackets). Measured, not left to the C parser's
    # RecursionError, so the limit does not depend on the caller's stack and whatever parses can
    # also be encoded again.
    if text.count("[") + text.count("{") > MAX_DEPTH:
        found = depth(text)
        if found > MAX_DEPTH:
            raise TooDeep(found)
    try:
        return _DECODER.decode(text)
    except RecursionError:  # the caller's own stack was already deep
        raise TooDeep() from None
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise
    # A numeric integer longer than Python's int-from-text limit: keep it exact as a Number.
    return simplejson.JSONDecoder(parse_float=Number, parse_int=_integer, allow_nan=False).decode(text)


_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def shallow(text: str, keep: int = 2) -> Any:
    """Parse `text` with every array or object nested deeper than `keep` replaced by null.

    For reading the top-level fields of a document `loads` refused as TooDeep (a change
    notification's id, table and key); the values it returns deeper down are not the document's.
    """
    parts: list[str] = []
    level, done, cut_from = 0, 0, -1
    for match in _TOKEN.finditer(text):
        piece = match.group()
        if piece in ("[", "{"):
            level += 1
            if level > keep and cut_from < 0:
                cut_from = match.start()
        elif piece in ("]", "}"):
            level -= 1
            if level == keep and cut_from >= 0:
                parts += (text[done:cut_from], "null")
                done, cut_from = match.end(), -1
    parts.append(text[done:])
    return loads("".join(parts))


def dumps(obj: Any, *, sort_keys: bool = False, default: Any = None) -> str:
    """Compact JSON text; Decimal is written as a number, NaN/Infinity (float or Decimal) raise ValueError."""
    return _encoder(sort_keys, default).encode(obj)  # type: ignore[no-any-return]


# simplejson.loads/dumps build a new decoder or encoder per call when given options: a projected
# view of a typical event measured 62 us that way, 36 us reusing these.
_DECODER = simplejson.JSONDecoder(parse_float=Number, allow_nan=False)


@functools.lru_cache(maxsize=8)
def _encoder(sort_keys: bool, default: Any) -> simplejson.JSONEncoder:
    return simplejson.JSONEncoder(
        separators=(",", ":"),
        ensure_ascii=False,
        use_decimal=True,
        allow_nan=False,
        sort_keys=sort_keys,
        default=default,
    )
