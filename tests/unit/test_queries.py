"""rowcast.db.queries: every named statement is loaded once, whole, and the Python code outside
the database contract runs its statements about the log through it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from rowcast.db import queries

ROOT = Path(__file__).resolve().parents[2]


def test_every_named_statement_is_loaded_without_its_comments() -> None:
    found = queries.statements()
    assert {"prune", "prune_lock", "prune_lock_wait", "wake_mode", "set_wake_mode"} <= set(found)
    for name, text in found.items():
        assert text and not text.lstrip().startswith("--"), name
        assert not text.rstrip().endswith(";"), name


def test_an_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="no statement named 'nope'"):
        queries.sql("nope")


# A statement naming an object of the schema rowcast (not a quoted setting such as 'rowcast.actor').
SQL_ABOUT_ROWCAST = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b.*(?<!['\w.])rowcast\.[a-z_]+(?!')", re.S)


def test_no_statement_about_the_schema_rowcast_is_written_outside_the_database_contract() -> None:
    """api/, notifier/, web/ and rowcast/ run their statements about the schema rowcast from
    db/sql/queries.sql (through rowcast.db.queries); only db/ spells SQL of its own."""
    strays = []
    for folder in ("api", "notifier", "web", "rowcast"):
        for path in sorted((ROOT / folder).glob("*.py")):
            tree = ast.parse(path.read_text())
            docstrings = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and node.body
                and isinstance(node.body[0], ast.Expr)
            }
            for node in ast.walk(tree):
                if id(node) not in docstrings and isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_ABOUT_ROWCAST.search(node.value):
                    strays.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not strays, f"SQL about rowcast.* outside db/: {strays}"


def test_the_statements_the_notifier_reads_with_are_the_log_columns_in_log_row_order() -> None:
    from rowcast.notifier.events import LOG_COLUMNS, LogRow

    assert LOG_COLUMNS == queries.sql("log_columns")
    for name in ("window_first", "window_page", "replay_first", "replay_next", "scan_first", "scan_next"):
        assert LOG_COLUMNS in queries.sql(name), name
    assert len(LogRow._fields) == 8
