"""Principals: scope matching across JSON types, tokens round-trip."""

from __future__ import annotations

from rowcast.auth import Principal, decode_token, issue_token, same_value

SECRET = "unit-secret-" + "x" * 32


def test_numeric_scope_from_the_cli_matches_a_text_column_and_an_integer_column() -> None:
    principal = decode_token(issue_token(SECRET, "u", scopes=["books.owner=42"]), SECRET)
    assert principal.scope("books") == {"owner": 42}
    assert principal.in_scope("books", {"owner": "42"})
    assert principal.in_scope("books", {"owner": 42})
    assert not principal.in_scope("books", {"owner": "420"})
    assert not principal.in_scope("books", {"owner": None})


def test_same_value_never_equates_booleans_or_containers_with_text() -> None:
    assert not same_value(True, "True")
    assert not same_value({"a": 1}, "{'a': 1}")
    assert not same_value("true", True)
    assert same_value("alice", "alice")


def test_unscoped_principal_sees_every_row_but_a_scoped_one_no_missing_row() -> None:
    assert Principal("u").in_scope("books", None)
    assert not Principal("u", scopes={"public.books": {"owner": "a"}}).in_scope("books", None)
