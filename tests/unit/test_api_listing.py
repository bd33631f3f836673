"""The list query string becomes SQL with every value bound, never formatted in."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from multidict import MultiDict
from rowcast.api import listing
from rowcast.api.errors import ApiError
from rowcast.api.resources import BOOKS
from sqlalchemy.dialects import postgresql


def parse(query: str, max_page_size: int = 500) -> listing.ListQuery:
    pairs = [part.partition("=") for part in query.split("&") if part]
    return listing.parse(BOOKS, MultiDict([(key, value) for key, _, value in pairs]), max_page_size)


def sql(query: listing.ListQuery) -> tuple[str, dict[str, object]]:
    statement = (
        sa.select(BOOKS.table)
        .where(*listing.where(BOOKS, query.conditions))
        .order_by(*listing.order_by(BOOKS, query.sort))
    )
    compiled = statement.compile(dialect=postgresql.dialect())
    return str(compiled), dict(compiled.params)


def test_defaults_are_fifty_rows_from_the_start_by_primary_key() -> None:
    query = parse("")
    assert (query.limit, query.offset, query.conditions, query.sort) == (50, 0, (), (("id", False),))


def test_default_limit_never_exceeds_the_page_size() -> None:
    assert parse("", max_page_size=20).limit == 20


def test_sort_terms_keep_their_order_and_end_with_the_key() -> None:
    assert parse("sort=-updated_at,title").sort == (("updated_at", True), ("title", False), ("id", False))
    assert parse("sort=-id").sort == (("id", True),)


def test_filter_values_are_bound_parameters() -> None:
    hostile = "x' OR '1'='1"
    text, params = sql(parse(f"owner={hostile}&num_pages.gt=100&title.like=D%&owner.in=a,b"))
    assert hostile not in text and hostile in params.values()
    assert 100 in params.values() and "D%" in params.values()
    assert "books.owner = %(owner_1)s" in text and "books.num_pages > %(num_pages_1)s" in text
    assert "books.title LIKE %(title_1)s" in text and "IN (__[POSTCOMPILE_owner_2])" in text


def test_is_null_and_descending_sort_compile_to_sql() -> None:
    text, _ = sql(parse("owner.is_null=true&num_pages.is_null=false&sort=-num_pages"))
    assert "books.owner IS NULL" in text and "books.num_pages IS NOT NULL" in text
    assert "ORDER BY books.num_pages DESC, books.id ASC" in text


def test_timestamps_without_a_zone_are_read_as_utc() -> None:
    (condition,) = parse("created_at.gte=2026-01-02T03:04:05").conditions
    assert condition.value.isoformat() == "2026-01-02T03:04:05+00:00"


@pytest.mark.parametrize(
    "query",
    ["limit=501", "offset=-5", "sort=secret", "password=x", "id.regex=1", "num_pages.in=1,x", "id=1e3"],
)
def test_anything_outside_the_vocabulary_is_a_400(query: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse(query)
    assert caught.value.status == 400 and caught.value.code == "bad_query"


def test_too_many_conditions_are_refused() -> None:
    with pytest.raises(ApiError, match="at most 32"):
        parse("&".join(f"num_pages.gt={n}" for n in range(33)))
