"""rowcast.db.queries: every named statement is loaded once, whole, and the Python code outside
the database contract runs its statements about the log through it."""

from __future__ import annotations

import pytest
from rowcast.db import queries


def test_every_named_statement_is_loaded_without_its_comments() -> None:
    found = queries.statements()
    assert {"prune", "prune_lock", "prune_lock_wait", "wake_mode", "set_wake_mode"} <= set(found)
    for name, text in found.items():
        assert text and not text.lstrip().startswith("--"), name
        assert not text.rstrip().endswith(";"), name


def test_an_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="no statement named 'nope'"):
        queries.sql("nope")
