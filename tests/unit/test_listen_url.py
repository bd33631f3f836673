"""ROWCAST_LISTEN_URL: the notifier's own URL, so DATABASE_URL may point at a transaction pooler."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
import yaml

from rowcast.errors import ConfigError
from rowcast.settings import from_env
from rowcast.stack import Stack
from tests.integration.test_cli import rowcast
from tests.integration.test_cli_errors import assert_one_line
from tests.pg import Server
from tests.pgbouncer import config_text

POOLER = "postgresql://app@pgbouncer:6432/shop"
DIRECT = "postgresql://notifier:secret@db:5432/shop"


def test_the_notifier_uses_the_listen_url_and_falls_back_to_database_url() -> None:
    both = from_env({"DATABASE_URL": POOLER, "ROWCAST_LISTEN_URL": DIRECT, "ROWCAST_AUTH": "open"})
    assert (both.database_url, both.notifier_url) == (POOLER, DIRECT)
    alone = from_env({"DATABASE_URL": POOLER, "ROWCAST_AUTH": "open"})
    assert alone.notifier_url == POOLER
    assert from_env({"ROWCAST_AUTH": "open"}).notifier_url is None  # the embedded Postgres


def test_a_flag_overrides_the_environment() -> None:
    settings = from_env(
        {"DATABASE_URL": POOLER, "ROWCAST_LISTEN_URL": DIRECT, "ROWCAST_AUTH": "open"},
        listen_url="postgresql://other@db/shop",
    )
    assert settings.notifier_url == "postgresql://other@db/shop"


def test_a_bad_listen_url_is_named_and_its_password_hidden() -> None:
    with pytest.raises(ConfigError) as raised:
        from_env(
            {"DATABASE_URL": POOLER, "ROWCAST_LISTEN_URL": "mysql://n:secret@db/shop", "ROWCAST_AUTH": "open"}
        )
    assert str(raised.value).startswith("ROWCAST_LISTEN_URL 'mysql://n:***@db/shop': scheme mysql://")


def test_a_listen_url_without_database_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="ROWCAST_LISTEN_URL is set but DATABASE_URL is not"):
        from_env({"ROWCAST_LISTEN_URL": DIRECT, "ROWCAST_AUTH": "open"})


def test_stack_gives_the_listen_url_to_notifiers_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROWCAST_LISTEN_URL", "postgresql://stale@elsewhere/x")  # the flag's value wins
    settings = from_env({"DATABASE_URL": POOLER, "ROWCAST_AUTH": "open"}, listen_url=DIRECT)
    stack = Stack(settings, 2, tmp_path)
    assert stack.child_env(notifier=True)["ROWCAST_LISTEN_URL"] == DIRECT
    assert stack.child_env(notifier=True)["DATABASE_URL"] == POOLER
    assert "ROWCAST_LISTEN_URL" not in stack.child_env()  # migrate and api: DATABASE_URL only


@pytest.mark.parametrize("command", ["notifier", "up", "stack"])
def test_the_cli_says_so_in_one_line(command: str, tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": POOLER,
        "ROWCAST_DATA_DIR": str(tmp_path / "never"),
        "ROWCAST_JWT_SECRET": "k" * 32,
    }
    result = rowcast(command, "--listen-url", "notaurl", env=env)
    assert assert_one_line(result, 2) == (
        "rowcast: ROWCAST_LISTEN_URL 'notaurl': not a URL: it must start with postgresql:// or postgres://"
    )
    assert not (tmp_path / "never").exists()


def test_the_readme_pgbouncer_ini_is_what_the_pgbouncer_tests_run() -> None:
    """README "Behind PgBouncer" shows pgbouncer.ini lines; tests/pgbouncer.py runs the same."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    shown = configparser.ConfigParser()
    shown.read_string(readme.split("\n```ini\n", 1)[1].split("\n```", 1)[0])
    run = configparser.ConfigParser()
    run.read_string(config_text(Server("127.0.0.1", 5432, "postgres", None, "postgres"), 6432, "transaction"))
    assert dict(shown["pgbouncer"]) == {"pool_mode": "transaction"}
    assert dict(shown["pgbouncer"]).items() <= dict(run["pgbouncer"]).items()


def test_compose_gives_the_notifier_a_direct_listen_url() -> None:
    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    env = compose["services"]["notifier"]["environment"]
    # Postgres itself (db:5432), the URL DATABASE_URL has until a pooler goes in front.
    assert "@db:5432/" in env["ROWCAST_LISTEN_URL"] and env["ROWCAST_LISTEN_URL"] == env["DATABASE_URL"]
