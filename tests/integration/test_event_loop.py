"""ROWCAST_EVENT_LOOP: the servers run on uvloop when asked (rowcast[uvloop]), and say so; a
value that is neither loop is one line and exit 2."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest

from rowcast.errors import ConfigError
from rowcast.settings import Settings
from tests.servers import rowcast_server, ws_connect


async def test_a_notifier_on_uvloop_delivers_a_psql_insert(db_url: str) -> None:
    pytest.importorskip("uvloop")
    env = {"ROWCAST_EVENT_LOOP": "uvloop", "ROWCAST_AUTH": "open", "ROWCAST_LOG_LEVEL": "INFO"}
    async with rowcast_server("notifier", db_url, env) as server, ws_connect(server.base) as client:
        assert (await client.subscribe())["type"] == "subscribed"
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("INSERT INTO books (title) VALUES ('on uvloop')")
        change = await client.until(lambda f: f["type"] == "change")
        assert change["row"]["title"] == "on uvloop"
        log = server.stop()
    assert "event loop: uvloop" in log and "Traceback" not in log


def test_an_unknown_event_loop_is_refused() -> None:
    with pytest.raises(ConfigError, match="ROWCAST_EVENT_LOOP must be asyncio or uvloop"):
        Settings(auth="open", event_loop="trio")
    done = subprocess.run(
        [sys.executable, "-m", "rowcast.cli", "notifier", "--port", "1"],
        env={"ROWCAST_EVENT_LOOP": "trio", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert done.stderr.strip().count("\n") == 0 and "ROWCAST_EVENT_LOOP" in done.stderr, done.stderr
