"""The README's code blocks run as written: Python against a running `rowcast up`, SQL on the test
database, and every `rowcast` command in a shell block parses and answers --help."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from rowcast.cli import build_parser
from tests.integration.test_cli import ROWCAST, rowcast
from tests.servers import free_port

README = (Path(__file__).parents[2] / "README.md").read_text()
# Fenced blocks, also those indented inside a list item.
BLOCKS = re.findall(r"^( *)```(\w*)\n(.*?)^\1```", README, re.M | re.S)


def blocks(language: str) -> list[str]:
    return [textwrap.dedent(code) for _, lang, code in BLOCKS if lang == language]


def test_every_code_block_is_one_this_file_runs() -> None:
    # Three sh blocks: the two commands, "Use your own Postgres" (test_own_postgres.py runs it) and
    # "Behind PgBouncer", whose ini block test_pgbouncer.py checks against the PgBouncer it runs.
    # The text block is `rowcast status`'s output (test_status.py compares it with the real one).
    assert sorted(lang for _, lang, _ in BLOCKS) == ["", "ini", "python", "sh", "sh", "sh", "sql", "text"]
    assert "notifier/" in blocks("")[0]  # the one block without a language is the architecture drawing


def shell_commands() -> list[list[str]]:
    """Each `rowcast ...` command of the shell blocks, split as a shell would (comments dropped)."""
    found: list[list[str]] = []
    for code in blocks("sh"):
        for line in code.splitlines():
            command: list[str] = []
            for word in [*shlex.split(line, comments=True), "&&"]:
                if word not in ("&&", "&"):  # `&`: a server started in the background
                    command.append(word)
                    continue
                if command[:1] == ["rowcast"]:
                    found.append(command[1:])
                command = []
    return found


def test_shell_blocks_name_rowcast_commands_that_parse_and_have_help() -> None:
    commands = shell_commands()
    assert ["up", "--demo"] in commands
    parser = build_parser()
    for argv in commands:
        _, unknown = parser.parse_known_args(argv)
        assert unknown == [], argv
        helped = rowcast(*[a for a in argv if not a.startswith("-")], "--help")
        assert helped.returncode == 0 and helped.stdout.startswith("usage: rowcast"), helped.stderr


@pytest.fixture
def up_url(db_url: str) -> Iterator[str]:
    """`rowcast up` on the test database; yields its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "ROWCAST_"))}
    proc = subprocess.Popen(
        [ROWCAST, "up", "--port", str(port)],
        env={**env, "DATABASE_URL": db_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("rowcast is up:"):
                break
        else:
            raise AssertionError("rowcast up exited before it was up")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.mark.timeout(120)
def test_python_blocks_run_as_written_against_rowcast_up(up_url: str, db_url: str) -> None:
    (client,) = blocks("python")
    snippet = subprocess.Popen(
        [sys.executable, "-c", client],
        env={**os.environ, "ROWCAST_URL": up_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert snippet.stdout is not None
        with ThreadPoolExecutor(1) as pool, psycopg.connect(db_url, autocommit=True) as conn:
            first = pool.submit(snippet.stdout.readline)
            deadline = time.monotonic() + 60
            # The snippet says nothing until a change: write until one reaches it.
            while not first.done() and time.monotonic() < deadline:
                conn.execute("INSERT INTO books (title, owner) VALUES ('Not for alice', 'bob')")
                conn.execute("INSERT INTO books (title, owner) VALUES ('From the README', 'alice')")
                time.sleep(0.5)
            snippet.terminate()
            printed = first.result(timeout=10)
    finally:
        snippet.terminate()
        _, errors = snippet.communicate(timeout=10)
    assert printed.startswith("insert {'id': "), errors
    assert "'owner': 'alice'" in printed and "bob" not in printed


def sql_statements(code: str) -> list[str]:
    text = "\n".join(line.split("--")[0] for line in code.splitlines())
    return [s.strip() for s in text.split(";") if s.strip()]


def test_sql_blocks_run_as_written(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    if int(str(conn.execute("SHOW max_prepared_transactions").fetchone()[0])) == 0:  # type: ignore[index]
        pytest.skip("this server does not allow two-phase commit (max_prepared_transactions = 0)")
    book = conn.execute("INSERT INTO books (title) VALUES ('two-phase') RETURNING id").fetchone()
    assert book == (1,), "the snippet updates book 1"
    (two_phase,) = blocks("sql")
    for statement in sql_statements(two_phase):
        conn.execute(statement)  # type: ignore[arg-type]
    logged = conn.execute(
        "SELECT count(*) FROM rowcast.changes WHERE table_name = 'books' AND op = 'update'"
    ).fetchone()
    assert logged == (1,)
