"""sqlfiles.without: a revision may leave lines of a frozen file out, but only lines that are there."""

from __future__ import annotations

import pytest
from rowcast.db import sqlfiles


def test_without_leaves_out_exactly_the_lines_named() -> None:
    full = sqlfiles.read("roles_v1.sql").splitlines()
    line = "GRANT USAGE ON SCHEMA public TO rowcast_app;"
    kept = sqlfiles.without("roles_v1.sql", line).splitlines()
    assert line in full and line not in kept
    assert len(kept) == len(full) - 1


def test_without_refuses_a_line_the_file_does_not_have() -> None:
    with pytest.raises(ValueError, match="has no line"):
        sqlfiles.without("capture_v1.sql", "CREATE SCHEMA IF NOT EXISTS rowcast;")


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("capture_v1.sql", "CREATE SCHEMA rowcast;"),
        (
            "capture_v3.sql",
            "COMMENT ON ROLE rowcast_capture IS 'rowcast: owns the capture trigger; may only append to rowcast.changes';",
        ),
        ("roles_v1_down.sql", "REVOKE ALL ON public.books, public.authors FROM rowcast_app;"),
    ],
)
def test_the_lines_the_revisions_leave_out_are_in_the_shipped_files(name: str, line: str) -> None:
    assert line in sqlfiles.read(name).splitlines()
