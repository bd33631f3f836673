"""Table names read the way Postgres reads them (rowcast.names), and one canonical key per table."""

from __future__ import annotations

import pytest

from rowcast import names
from rowcast.auth import BadGrant, parse_scope, principal_from_claims
from rowcast.errors import RowcastError


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("books", ("public", "books")),
        ("audit.log", ("audit", "log")),
        ("Co.Books", ("co", "books")),  # unquoted parts fold, as in SQL
        ('co."x.y"', ("co", "x.y")),
        ('"co.x".y', ("co.x", "y")),
        ('"Mixed Case"', ("public", "Mixed Case")),
        ('"a""b"."c"', ('a"b', "c")),
    ],
)
def test_dotted_names_follow_postgres_rules(text: str, parsed: tuple[str, str]) -> None:
    assert names.parse(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("co.x.y", "ambiguous"),
        ("db.co.x.y", "ambiguous"),
        ('"open', "unterminated"),
        ("a..b", "empty"),
        (".books", "empty"),
        ("books.", "empty"),
        ('"x"y', "unexpected"),
        ('a"b', "quote inside"),
        ("x" * 64, "longer than 63"),
    ],
)
def test_malformed_or_ambiguous_names_are_refused(text: str, message: str) -> None:
    with pytest.raises(names.BadName, match=message):
        names.parse(text)


def test_the_two_colliding_tables_have_different_keys() -> None:
    """Table `x.y` in schema `co` and table `y` in schema `co.x` were both `co.x.y`."""
    first, second = names.canonical("co", "x.y"), names.canonical("co.x", "y")
    assert first != second
    assert (first, second) == ('co."x.y"', '"co.x".y')
    # A key reads back as itself: it can be written anywhere a name is accepted.
    assert names.qualify(first) == first and names.qualify(second) == second
    assert names.canonical("public", "books") == names.qualify("books") == "public.books"


def test_exact_fields_are_not_folded_or_parsed() -> None:
    assert names.exact("co.x", "Y") == ("co.x", "Y")
    assert names.canonical(*names.exact("co.x", "Y")) == '"co.x"."Y"'
    with pytest.raises(names.BadName):
        names.exact("", "books")


def test_grants_name_tables_strictly_but_may_quote() -> None:
    claims = {"sub": "a", "exp": 2_000_000_000}
    ok = principal_from_claims({**claims, "rowcast": {"read": ['co."x.y"', "books"]}})
    assert ok.can_read('co."x.y"') and ok.can_read("public.books")
    assert not ok.can_read('"co.x".y')
    for bad in ("Books", "b\u043e\u043eks", "co.x.y"):  # folding, a Cyrillic look-alike, ambiguity
        with pytest.raises(BadGrant):
            principal_from_claims({**claims, "rowcast": {"read": [bad]}})


def test_scope_flags_take_quoted_table_names() -> None:
    assert parse_scope('co."x.y".owner=bob') == ('co."x.y"', "owner", "bob")
    assert parse_scope('"co.x".y.owner:=7') == ('"co.x".y', "owner", 7)
    assert parse_scope("books.owner=00123") == ("public.books", "owner", "00123")
    with pytest.raises(RowcastError):
        parse_scope("a.b.c.d=1")
