"""ETag and If-Match: a row's ETag is its quoted `version` (or `xmin`); writes say which they read."""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web
from rowcast.api.errors import ApiError

_TAG = r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"'
_LIST = re.compile(rf"\s*{_TAG}(?:\s*,\s*{_TAG})*\s*")
_EACH = re.compile(r'(W/)?"([^"]*)"')
_VERSION = re.compile(r"[0-9]{1,10}")
# A `version` is an integer column, an `xmin` a 32-bit transaction id: a larger tag was never issued.
MAX_VERSION = 2**32 - 1


def etag(version: int | str) -> str:
    return f'"{version}"'


@dataclass(frozen=True)
class IfMatch:
    force: bool  # `If-Match: *`: write whatever version is there
    versions: frozenset[int]


def if_match(request: web.Request) -> IfMatch:
    """The versions a write may replace: 428 without If-Match, 400 if it is not a list of ETags."""
    raw = request.headers.get("If-Match")
    if raw is None or not raw.strip():
        raise ApiError(
            428,
            'this write needs If-Match: "<version>" (the ETag you read), or If-Match: * to overwrite',
        )
    if raw.strip() == "*":
        return IfMatch(force=True, versions=frozenset())
    if not _LIST.fullmatch(raw):
        raise ApiError(400, 'If-Match must be * or a list of ETags such as "3"', code="bad_header")
    # If-Match compares strongly (RFC 9110 13.1.1): a weak tag, or one we never issued, never matches.
    versions = frozenset(
        int(value)
        for weak, value in _EACH.findall(raw)
        if not weak and _VERSION.fullmatch(value) and int(value) <= MAX_VERSION
    )
    return IfMatch(force=False, versions=versions)
