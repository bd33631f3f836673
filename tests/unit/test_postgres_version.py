"""Postgres older than 13 lacks the xid8 functions capture uses: refused in one line, by name."""

from __future__ import annotations

import pytest

from rowcast.database import require_supported
from rowcast.errors import ConfigError


@pytest.mark.parametrize("version", [130000, 150020, 180006])
def test_13_and_later_are_accepted(version: int) -> None:
    require_supported(version)


def test_12_is_refused_saying_what_is_needed() -> None:
    with pytest.raises(ConfigError) as refused:
        require_supported(120022)
    assert str(refused.value) == (
        "Postgres 12.22 is too old: rowcast needs 13 or later (the xid8 functions); tested on 15 and 18"
    )
