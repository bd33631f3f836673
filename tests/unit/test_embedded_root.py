"""As root the embedded Postgres runs as a system user; creating that user is said, in one line.

The user cannot be deleted on a shared test machine (other servers run as it), so useradd and the
user database are stood in for here."""

from __future__ import annotations

import logging
import subprocess
from typing import Any

import pytest

from rowcast import embedded


def test_creating_the_system_user_is_said_in_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[list[str]] = []

    def no_such_user(name: str) -> Any:
        raise KeyError(name)

    def useradd(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(embedded.pwd, "getpwnam", no_such_user)
    monkeypatch.setattr(embedded.subprocess, "run", useradd)
    monkeypatch.setattr(embedded, "_check_reachable", lambda path: None)
    with caplog.at_level(logging.INFO, logger="rowcast.embedded"):
        embedded._ensure_system_user()
    assert ran and ran[0][0] == "useradd" and ran[0][-1] == "rowcast_pg"
    assert [r.getMessage() for r in caplog.records] == [
        "running as root: created the system user 'rowcast_pg' to run the embedded Postgres "
        "(Postgres refuses to run as root); userdel rowcast_pg removes it"
    ]


def test_an_existing_system_user_is_not_news(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(embedded.pwd, "getpwnam", lambda name: object())
    monkeypatch.setattr(embedded, "_check_reachable", lambda path: None)
    with caplog.at_level(logging.INFO, logger="rowcast.embedded"):
        embedded._ensure_system_user()
    assert caplog.records == []
