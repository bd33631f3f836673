"""Pointed at a port where nothing answers, the client keeps trying and says so, with the URL."""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing

import pytest

from rowcast.client import default_url, subscribe
from tests.servers import free_port


async def test_repeated_failures_log_a_warning_naming_the_url(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.DEBUG, logger="rowcast.client")
    async with aclosing(subscribe(url, "books", max_backoff=0.01)) as changes:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(2):
                async for _ in changes:
                    pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings, "no warning after 2s of refused connections"
    assert warnings[0].startswith(f"no rowcast notifier answers at {url} (3 attempts, last: ")
    assert warnings[0].endswith("still retrying: is the server running, and is the URL right (ROWCAST_URL)?")
    assert len(warnings) < 0.2 * len(caplog.records)  # not one per attempt


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, "http://127.0.0.1:8080"),
        ({"ROWCAST_PORT": "9001"}, "http://127.0.0.1:9001"),
        ({"ROWCAST_HOST": "0.0.0.0", "ROWCAST_PORT": "9001"}, "http://127.0.0.1:9001"),
        ({"ROWCAST_HOST": "::1"}, "http://[::1]:8080"),
        ({"ROWCAST_URL": "https://rc.example", "ROWCAST_PORT": "9001"}, "https://rc.example"),
    ],
)
def test_default_url_follows_the_environment_rowcast_up_reads(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str
) -> None:
    for name in ("ROWCAST_URL", "ROWCAST_HOST", "ROWCAST_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert default_url() == url
