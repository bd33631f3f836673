"""Presence's pure parts (notifier/presence.py): display names, keys, frames, who is named."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import pytest
from rowcast.notifier.presence import (
    NAME_MAX,
    PK_MAX,
    Entry,
    Mine,
    PresenceError,
    _who,
    canonical_pk,
    display_name,
)

from rowcast.auth import OPEN, Principal


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("Ann", "Ann"),
        ("  Ann \n\t Lee  ", "Ann Lee"),
        ("A\x00n\x1bn\u202e", "Ann"),  # control and bidi-override characters go
        ("x" * 100, "x" * NAME_MAX),
        ("", None),
        ("\x00\x01", None),
        (42, None),
        (None, None),
    ],
)
def test_display_names_are_cleaned_and_bounded(given: object, shown: str | None) -> None:
    assert display_name(given) == shown


def test_keys_must_name_exactly_the_key_columns() -> None:
    assert canonical_pk({"b": 2, "a": "x"}, ("a", "b")) == '{"a":"x","b":2}'
    assert canonical_pk({"id": Decimal("7.50")}, ("id",)) == '{"id":7.50}'
    for bad in ({"id": 1, "other": 2}, {}, [1], "7", {"id": [1]}, {"id": {"x": 1}}):
        with pytest.raises(PresenceError) as raised:
            canonical_pk(bad, ("id",))
        assert raised.value.code == "bad_frame"
    with pytest.raises(PresenceError):
        canonical_pk({"id": "x" * PK_MAX}, ("id",))


def test_who_is_the_tokens_subject_and_a_name_only_in_open_mode() -> None:
    mine = Mine("s", name="mallory")

    def session(principal: Principal) -> object:
        return SimpleNamespace(principal=principal)

    assert _who(session(Principal(sub="alice")), mine) == "alice"  # type: ignore[arg-type]
    assert _who(session(OPEN), mine) == "mallory"  # type: ignore[arg-type]
    assert _who(session(OPEN), Mine("s")) == "anonymous"  # type: ignore[arg-type]


def test_a_frame_carries_the_viewers_ref_and_null_when_gone() -> None:
    entry = Entry("s1", "alice", "public", "books", '{"id":7}', "editing", "2026-12-03T19:00:00+00:00")
    frame = entry.frame("v")
    assert frame == {
        "ref": "v",
        "schema": "public",
        "table": "books",
        "pk": {"id": 7},
        "who": "alice",
        "session": "s1",
        "state": "editing",
        "since": "2026-12-03T19:00:00+00:00",
    }
    assert entry.frame("v", gone=True)["state"] is None
    assert entry.qualified == "public.books"


def test_the_presence_timeout_is_a_duration_setting_with_bounds() -> None:
    from rowcast.errors import ConfigError
    from rowcast.settings import from_env

    assert from_env({"ROWCAST_AUTH": "open"}).presence_timeout == 3.0
    assert from_env({"ROWCAST_AUTH": "open", "ROWCAST_PRESENCE_TIMEOUT": "1500ms"}).presence_timeout == 1.5
    for bad in ("0", "100ms", "1h"):
        with pytest.raises(ConfigError, match="ROWCAST_PRESENCE_TIMEOUT must be between 500ms and 300s"):
            from_env({"ROWCAST_AUTH": "open", "ROWCAST_PRESENCE_TIMEOUT": bad})
