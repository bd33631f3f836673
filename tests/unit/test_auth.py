"""Principals: scope matching across JSON types, tokens round-trip."""

from __future__ import annotations

from rowcast.auth import Principal, decode_token, issue_token, same_value

SECRET = "unit-secret-" + "x" * 32


def test_scope_values_keep_the_type_they_were_written_with() -> None:
    text = decode_token(issue_token(SECRET, "u", scopes=["books.owner=00123"]), SECRET)
    assert text.scope("books") == {"owner": "00123"}
    assert text.in_scope("books", {"owner": "00123"})
    assert not text.in_scope("books", {"owner": 123}) and not text.in_scope("books", {"owner": "123"})
    number = decode_token(issue_token(SECRET, "u", scopes=["books.owner_id:=42"]), SECRET)
    assert number.scope("books") == {"owner_id": 42}
    assert number.in_scope("books", {"owner_id": 42}) and number.in_scope("books", {"owner_id": 42.0})
    assert not number.in_scope("books", {"owner_id": "42"})
    assert not number.in_scope("books", {"owner_id": None})


def test_a_scope_column_missing_from_the_row_matches_nothing_not_everything() -> None:
    principal = Principal("u", scopes={"public.books": {"missing_column": None}})
    assert not principal.in_scope("books", {"id": 1, "owner": "bob"})


def test_same_value_never_equates_booleans_or_containers_with_text() -> None:
    assert not same_value(True, "True")
    assert not same_value({"a": 1}, "{'a': 1}")
    assert not same_value("true", True)
    assert not same_value(1, True) and not same_value(True, 1)
    assert not same_value("42", 42) and not same_value(42, "42")
    assert same_value("alice", "alice")


def test_unscoped_principal_sees_every_row_but_a_scoped_one_no_missing_row() -> None:
    assert Principal("u").in_scope("books", None)
    assert not Principal("u", scopes={"public.books": {"owner": "a"}}).in_scope("books", None)
