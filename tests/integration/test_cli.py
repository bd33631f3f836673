"""The rowcast CLI as a DBA uses it: embedded server lifecycle, capture, tokens, tail's view."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg

from rowcast.auth import decode_token
from rowcast.client import Change
from rowcast.commands import format_change
from tests.servers import free_port

# The console script `pip install` made, as a user runs it.
ROWCAST = str(Path(sys.executable).with_name("rowcast"))


def rowcast(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ROWCAST_DATA_DIR")}
    return subprocess.run(
        [ROWCAST, *args],
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
        psql = rowcast("db", "psql", "--", "-At", "-c", "SELECT 40 + 2", env=env)
        assert psql.returncode == 0 and psql.stdout.strip() == "42", psql.stderr
        no_roles = rowcast("migrate", env=env)  # a fresh server: roles are an explicit step
        assert no_roles.returncode == 2 and no_roles.stderr.strip() == (
            "rowcast: rowcast's roles do not exist on this server (rowcast_capture, rowcast_notifier, "
            "rowcast_app): a superuser (or a role with CREATEROLE) creates them once with "
            "`rowcast roles install` (or runs `rowcast migrate --roles`)"
        )
        migrated = rowcast("migrate", "--roles", env=env)
        assert migrated.returncode == 0, migrated.stderr
        assert migrated.stdout.startswith("created cluster-wide roles (NOLOGIN, for every database of this")
        assert rowcast("capture", "list", env=env).stdout == ""  # migrate made no demo tables
        assert rowcast("demo", "install", env=env).returncode == 0
        enabled = rowcast("capture", "list", env=env)
        assert "public.books\tok" in enabled.stdout
    finally:
        stopped = rowcast("db", "stop", env=env)
    assert stopped.returncode == 0 and stopped.stdout.strip() == "embedded Postgres stopped"
    after = rowcast("db", "status", env=env)
    assert after.returncode == 3 and after.stdout.strip().endswith(": stopped")


def test_data_dir_flag_is_the_same_as_rowcast_data_dir_for_every_db_action(pg_tmp: Path) -> None:
    data = pg_tmp / "flagged"
    flag = ("--data-dir", str(data))
    elsewhere = {"ROWCAST_DATA_DIR": str(pg_tmp / "not-here")}
    stopped = rowcast("db", "status", *flag, env=elsewhere)
    assert stopped.returncode == 3 and stopped.stdout.strip() == f"embedded Postgres in {data}: stopped"
    started = rowcast("db", "start", *flag, env=elsewhere)
    assert started.returncode == 0, started.stderr
    try:
        assert (data / "pgdata" / "PG_VERSION").exists() and not (pg_tmp / "not-here").exists()
        running = rowcast("db", "status", *flag, env=elsewhere)
        assert running.returncode == 0 and f"embedded Postgres in {data}: running on" in running.stdout
        assert rowcast("migrate", "--roles", *flag, env=elsewhere).returncode == 0
        listed = rowcast("capture", "list", *flag, env=elsewhere)
        assert listed.returncode == 0 and listed.stderr == "", listed.stderr
        psql = rowcast("db", "psql", *flag, "--", "-At", "-c", "SELECT 6 * 7", env=elsewhere)
        assert psql.returncode == 0 and psql.stdout.strip() == "42", psql.stderr
    finally:
        assert rowcast("db", "stop", *flag, env=elsewhere).stdout.strip() == "embedded Postgres stopped"


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
    assert missing_arg.returncode == 2
    assert missing_arg.stderr.splitlines() == [
        "rowcast capture enable: the following arguments are required: TABLE "
        "(see rowcast capture enable --help)"
    ]


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


def test_token_refuses_a_secret_shorter_than_32_bytes_in_one_line() -> None:
    short = rowcast("token", "--sub", "x", env={"ROWCAST_JWT_SECRET": "s" * 31})
    assert short.returncode == 2 and short.stdout == ""
    assert short.stderr.splitlines() == [
        "rowcast: ROWCAST_JWT_SECRET is 31 bytes: HS256 needs at least 32 "
        "(e.g. python3 -c 'import secrets; print(secrets.token_hex(32))')"
    ]


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


def test_tail_follows_rowcast_port_and_gives_up_in_one_line_when_nothing_answers() -> None:
    port = free_port()
    result = rowcast("tail", "books", "--give-up-after", "1s", env={"ROWCAST_PORT": str(port)})
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"rowcast: no rowcast notifier answered at http://127.0.0.1:{port} for 1s: "
        "is `rowcast up` (or `rowcast notifier`) running there? set --url or ROWCAST_URL"
    ]
    other = free_port()
    by_url = rowcast(
        "tail",
        "books",
        "--give-up-after",
        "0.5s",
        env={"ROWCAST_PORT": str(port), "ROWCAST_URL": f"http://localhost:{other}"},
    )
    assert by_url.returncode == 1 and f"at http://localhost:{other} for 0.5s" in by_url.stderr


def test_tail_retry_forever_says_once_that_nothing_answers_and_keeps_trying() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    tail = subprocess.Popen(
        [ROWCAST, "tail", "books", "--url", url, "--retry-forever"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        tail.wait(3)
    except subprocess.TimeoutExpired:  # still trying, as asked
        tail.send_signal(signal.SIGINT)
    out, err = tail.communicate(timeout=10)
    assert tail.returncode == 0 and out == ""
    assert err.splitlines() == [
        f"-- no answer at {url} yet, retrying: "
        "is `rowcast up` (or `rowcast notifier`) running there? set --url or ROWCAST_URL"
    ]
