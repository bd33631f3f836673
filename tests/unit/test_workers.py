"""`--workers` / ROWCAST_WORKERS: the default, parsing, and the one-line refusal."""

from __future__ import annotations

import os
import sys

import pytest

from rowcast.cli import build_parser, main
from rowcast.commands import _settings
from rowcast.errors import ConfigError
from rowcast.settings import default_workers, from_env


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the default is 1 off Linux")
def test_the_default_is_the_cores_this_process_may_use() -> None:
    assert default_workers() == len(os.sched_getaffinity(0))
    assert from_env({"ROWCAST_AUTH": "open"}).workers == default_workers()


def test_the_environment_and_the_flag_set_it_and_the_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert from_env({"ROWCAST_AUTH": "open", "ROWCAST_WORKERS": "3"}).workers == 3
    monkeypatch.setenv("ROWCAST_WORKERS", "4")
    assert _settings(build_parser().parse_args(["notifier", "--workers", "1"]), "open").workers == 1
    assert _settings(build_parser().parse_args(["up"]), "open").workers == 4


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_a_bad_count_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="ROWCAST_WORKERS"):
        from_env({"ROWCAST_AUTH": "open", "ROWCAST_WORKERS": value})


def test_a_bad_flag_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["notifier", "--auth", "open", "--workers", "0"]) == 2
    assert capsys.readouterr().err == "rowcast: --workers (ROWCAST_WORKERS) must be 1 or more, not 0\n"
