"""The rowcast CLI as a DBA uses it: embedded server lifecycle, capture, tokens, tail's view."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

from rowcast.auth import decode_token
from rowcast.client import Change
from rowcast.commands import format_change


def rowcast(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ROWCAST_DATA_DIR")}
    return subprocess.run(
        [sys.executable, "-m", "rowcast.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**base, **(env or {})},
        timeout=120,
    )


def test_embedded_database_lifecycle_start_status_url_psql_stop(pg_tmp: Path) -> None:
    env = {"ROWCAST_DATA_DIR": str(pg_tmp / "data")}
    started = rowcast("db", "start", env=env)
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("embedded Postgres started: postgresql://postgres@127.0.0.1:")
    try:
        assert rowcast("db", "start", env=env).stdout.startswith("embedded Postgres already running")
        status = rowcast("db", "status", env=env)
        assert status.returncode == 0 and "running on postgresql://" in status.stdout
        url = rowcast("db", "url", env=env).stdout.strip()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("rowcast",)
        psql = rowcast("db", "psql", "-At", "-c", "SELECT 40 + 2", env=env)
        assert psql.returncode == 0 and psql.stdout.strip() == "42", psql.stderr
        assert rowcast("migrate", env=env).returncode == 0
        enabled = rowcast("capture", "list", env=env)
        assert "public.books\tok" in enabled.stdout
    finally:
        stopped = rowcast("db", "stop", env=env)
    assert stopped.returncode == 0 and stopped.stdout.strip() == "embedded Postgres stopped"
    after = rowcast("db", "status", env=env)
    assert after.returncode == 3 and after.stdout.strip().endswith(": stopped")


def test_capture_enable_list_disable_from_the_cli(
    db_url: str, conn: psycopg.Connection[tuple[object, ...]]
) -> None:
    conn.execute("CREATE TABLE shelf (room text, slot int, PRIMARY KEY (room, slot))")
    env = {"DATABASE_URL": db_url}
    enabled = rowcast("capture", "enable", "shelf", env=env)
    assert (
        enabled.returncode == 0
        and "capture enabled on public.shelf (primary key: room, slot)" in enabled.stdout
    )
    assert "public.shelf\tok" in rowcast("capture", "list", env=env).stdout
    disabled = rowcast("capture", "disable", "shelf", env=env)
    assert disabled.returncode == 0 and "capture disabled on public.shelf" in disabled.stdout
    assert "public.shelf" not in rowcast("capture", "list", env=env).stdout
    missing_arg = rowcast("capture", "enable", env=env)
    assert missing_arg.returncode == 2 and "needs at least one TABLE" in missing_arg.stderr


def test_wake_mode_command_shows_and_sets_the_mode(db_url: str) -> None:
    env = {"DATABASE_URL": db_url}
    assert rowcast("wake-mode", env=env).stdout.strip() == "notify"
    assert "is now coalesced" in rowcast("wake-mode", "coalesced", env=env).stdout
    assert rowcast("wake-mode", env=env).stdout.strip() == "coalesced"


def test_token_command_issues_a_verifiable_scoped_token() -> None:
    secret = "cli-secret-" + "k" * 32
    result = rowcast(
        "token",
        "--sub",
        "alice",
        "--read",
        "books",
        "--write",
        "books",
        "--scope",
        "books.owner=alice",
        "--ttl",
        "1h",
        env={"ROWCAST_JWT_SECRET": secret},
    )
    assert result.returncode == 0, result.stderr
    principal = decode_token(result.stdout.strip(), secret)
    assert principal.sub == "alice"
    assert principal.read == principal.write == frozenset({"public.books"})
    assert principal.scope("books") == {"owner": "alice"}
    left = principal.seconds_left()
    assert left is not None and 3500 < left <= 3600
    no_secret = rowcast("token", "--sub", "x")
    assert no_secret.returncode == 2 and "ROWCAST_JWT_SECRET" in no_secret.stderr


def test_tail_terminal_view_shows_time_op_key_actor_and_changed_columns() -> None:
    update = Change(
        7,
        "public",
        "books",
        "update",
        {"id": 3},
        {"id": 3, "num_pages": 500},
        {"num_pages": 412},
        {"user": "postgres", "app": "psql", "actor": None},
        "2026-11-27T22:41:20.349989+00:00",
    )
    line = format_change(update)
    assert "UPDATE" in line and "books id=3" in line and "by postgres via psql" in line
    assert "num_pages: 412→500" in line
    insert = Change(
        8,
        "public",
        "books",
        "insert",
        {"id": 4},
        {"id": 4, "title": "Dune"},
        None,
        {"user": "rowcast_app", "app": "api", "actor": "alice"},
        "2026-11-27T22:41:21+00:00",
    )
    assert "by alice via api" in format_change(insert) and "title='Dune'" in format_change(insert)
