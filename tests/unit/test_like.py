"""LIKE without backtracking: the same answers as SQL LIKE, in linear time."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rowcast.notifier.like import MAX_PATTERN, Like, LikeSyntaxError


def reference(pattern: str) -> re.Pattern[str]:
    """The regex the notifier used to run (correct, but exponential on `%a%a%a…`)."""
    out = []
    chars = iter(pattern)
    for ch in chars:
        if ch == "\\":
            out.append(re.escape(next(chars)))
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


PATTERN_CHARS = st.sampled_from(["a", "b", "é", "€", "%", "_", "\\%", "\\_", "\\\\", "?"])
VALUE_CHARS = st.sampled_from(["a", "b", "é", "€", "%", "_", "\\", "?", "\x00"])


@settings(max_examples=3000, deadline=None)
@given(st.lists(PATTERN_CHARS, max_size=10).map("".join), st.lists(VALUE_CHARS, max_size=14).map("".join))
def test_like_agrees_with_the_regex_translation(pattern: str, value: str) -> None:
    assert Like(pattern).match(value) == (reference(pattern).fullmatch(value) is not None)


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("", "", True),
        ("%", "", True),
        ("_", "", False),
        ("a%b", "ab", True),
        ("a%b", "aXbXb", True),
        ("a\\%b", "a%b", True),
        ("a\\%b", "aXb", False),
        ("%_%", "x", True),
        ("%a_c%", "xxabcxx", True),
        ("%a_c%d", "abcd", True),
        ("%a_c%d", "abce", False),
    ],
)
def test_like_examples(pattern: str, value: str, expected: bool) -> None:
    assert Like(pattern).match(value) is expected


def test_a_trailing_escape_and_over_long_patterns_are_refused() -> None:
    with pytest.raises(LikeSyntaxError):
        Like("abc\\")
    with pytest.raises(LikeSyntaxError):
        Like("%" * (MAX_PATTERN + 1))


@pytest.mark.parametrize("fill", ["a", "€"])
@pytest.mark.parametrize(
    "pattern",
    ["%a%a%a%a%a%a!%", "%_" * 10 + "!%", "%" + "a_" * 30 + "!%", "%" + "_" * 60 + "!%", "%a%" * 21 + "!"],
)
def test_worst_patterns_take_milliseconds_on_a_10kb_value(pattern: str, fill: str) -> None:
    like = Like(pattern.replace("a", fill))
    value = fill * 10_000
    started = time.perf_counter()
    assert not like.match(value)
    # The backtracking regex took seconds on 90 characters; generous for a shared machine.
    assert time.perf_counter() - started < 0.05
