"""Body validation: types, limits, unknown and read-only fields, PUT versus PATCH."""

from __future__ import annotations

from typing import Any

import pytest
from rowcast.api.errors import ApiError
from rowcast.api.resources import AUTHORS, BOOKS
from rowcast.api.validation import is_json, validate


def errors(body: Any, mode: str = "create") -> dict[str, str]:
    with pytest.raises(ApiError) as caught:
        validate(BOOKS, body, mode)  # type: ignore[arg-type]
    assert caught.value.status == 422
    return caught.value.fields or {}


def test_fields_come_from_the_model_and_the_declaration() -> None:
    fields = BOOKS.fields
    assert (fields["title"].max_length, fields["title"].min_length) == (300, 1)
    assert (fields["num_pages"].minimum, fields["num_pages"].maximum) == (1, 100_000)
    assert (fields["id"].minimum, fields["id"].maximum) == (-(2**31), 2**31 - 1)
    assert [f.name for f in fields.values() if f.required_on_create and f.writable] == ["title"]
    assert [f.name for f in fields.values() if f.writable] == ["title", "author", "num_pages", "owner"]
    assert AUTHORS.fields["born"].nullable and not AUTHORS.fields["name"].nullable


def test_valid_create_returns_the_values_to_write() -> None:
    body = {"title": "Dune", "num_pages": 412.0, "owner": None}
    assert validate(BOOKS, body, "create") == {"title": "Dune", "num_pages": 412, "owner": None}


def test_booleans_are_not_integers() -> None:
    assert errors({"title": "t", "num_pages": True}) == {"num_pages": "must be an integer"}
    assert errors({"title": "t", "num_pages": False}) == {"num_pages": "must be an integer"}


def test_every_bad_field_is_reported_at_once() -> None:
    found = errors({"title": "", "num_pages": 0, "id": 1, "colour": "red"})
    assert set(found) == {"title", "num_pages", "id", "colour"}
    assert found["id"] == "read-only field" and found["colour"] == "unknown field"


def test_put_needs_every_writable_field_patch_only_one() -> None:
    assert errors({"title": "t"}, "replace") == {
        "author": "required",
        "num_pages": "required",
        "owner": "required",
    }
    assert validate(BOOKS, {"owner": "x"}, "patch") == {"owner": "x"}
    with pytest.raises(ApiError, match="at least one field"):
        validate(BOOKS, {}, "patch")


def test_a_huge_body_reports_a_bounded_number_of_errors() -> None:
    found = errors({f"f{n}": n for n in range(1000)} | {"title": "t"})
    assert len(found) == 50


@pytest.mark.parametrize("value", [[], "x", 3, None])
def test_body_must_be_an_object(value: Any) -> None:
    with pytest.raises(ApiError, match="JSON object"):
        validate(BOOKS, value, "create")


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        ("application/json", True),
        ("application/merge-patch+json", True),
        ("text/json", False),
        ("text/plain", False),
    ],
)
def test_json_media_types(content_type: str, ok: bool) -> None:
    assert is_json(content_type) is ok
