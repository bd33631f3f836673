"""If-Match parsing: strong ETags only, * forces, garbage is a 400, absence a 428."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from rowcast.api.errors import ApiError
from rowcast.api.preconditions import IfMatch, etag, if_match


def parsed(value: str | None) -> IfMatch:
    headers = {} if value is None else {"If-Match": value}
    return if_match(make_mocked_request("PATCH", "/api/books/1", headers=headers))


def test_etag_is_the_quoted_version() -> None:
    assert etag(7) == '"7"'


@pytest.mark.parametrize(
    ("header", "versions"),
    [
        ('"3"', {3}),
        (' "3" , "5"', {3, 5}),
        ('W/"3"', set()),  # If-Match compares strongly
        ('"abc"', set()),  # a tag we never issued matches nothing
        ('"99999999999"', set()),  # beyond the integer column
        ('"3", W/"4"', {3}),
    ],
)
def test_if_match_lists_the_strong_versions(header: str, versions: set[int]) -> None:
    assert parsed(header) == IfMatch(force=False, versions=frozenset(versions))


def test_if_match_star_forces() -> None:
    assert parsed("*").force and parsed(" * ").force


@pytest.mark.parametrize("header", [None, "", "  "])
def test_missing_if_match_is_428(header: str | None) -> None:
    with pytest.raises(ApiError) as caught:
        parsed(header)
    assert (caught.value.status, caught.value.code) == (428, "precondition_required")


@pytest.mark.parametrize("header", ["3", '"3', '"3" "4"', '*, "3"', '"3",'])
def test_malformed_if_match_is_400(header: str) -> None:
    with pytest.raises(ApiError) as caught:
        parsed(header)
    assert (caught.value.status, caught.value.code) == (400, "bad_header")
