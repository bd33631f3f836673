"""Finding 11: the embedded Postgres trusted every local login and opened the data dir's parents."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from rowcast.embedded import EmbeddedPostgres, binary
from rowcast.errors import EmbeddedPostgresError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs psql as another OS user (needs root)")


def psql_as_nobody(port: int, user: str = "postgres") -> subprocess.CompletedProcess[str]:
    """The bundled psql as OS user nobody, with no password to give (-w: never prompt)."""
    return subprocess.run(
        [
            "runuser",
            "-u",
            "nobody",
            "--",
            str(binary("psql")),
            "-w",
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            user,
            "-d",
            "postgres",
            "-Atc",
            "SELECT 1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd="/",
    )


@pytest.fixture
def parent(pg_tmp: Path) -> Path:
    """A parent directory with a mode no one asked rowcast to change."""
    path = pg_tmp / "home"
    path.mkdir()
    path.chmod(0o751)
    return path


@pytest.fixture
def server(parent: Path) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(parent / "rowcast")
    pg.start()
    yield pg
    pg.destroy()


def test_another_os_user_cannot_log_in_and_rowcast_can(server: EmbeddedPostgres, parent: Path) -> None:
    refused = psql_as_nobody(server.port)
    assert refused.returncode != 0 and "password" in refused.stderr, refused
    with psycopg.connect(server.url()) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    hba = (server.pgdata / "pg_hba.conf").read_text()
    assert not [
        line for line in hba.splitlines() if line.strip() and not line.startswith("#") and "trust" in line
    ]
    # The secret: only rowcast's user can read it, and it is in no URL.
    assert stat.S_IMODE(server.passfile.stat().st_mode) == 0o600
    assert server.password() not in server.url()
    assert stat.S_IMODE(parent.stat().st_mode) == 0o751  # nothing above the data dir was touched


def test_a_data_dir_the_server_user_cannot_reach_is_refused_not_opened(pg_tmp: Path) -> None:
    private = pg_tmp / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    with pytest.raises(EmbeddedPostgresError, match="ROWCAST_DATA_DIR"):
        EmbeddedPostgres(private / "rowcast").start()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700


def test_a_trust_data_dir_from_before_is_upgraded_on_start(server: EmbeddedPostgres) -> None:
    # Make it what rowcast used to leave behind: trust for everyone and no password file.
    hba = server.pgdata / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    server.passfile.unlink()
    assert psql_as_nobody(server.port).returncode == 0  # the hole, as it was
    server.stop()
    server.start()
    refused = psql_as_nobody(server.port)
    assert refused.returncode != 0 and "password" in refused.stderr
    with psycopg.connect(server.url()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_running_trust_server_is_upgraded_by_db_start(server: EmbeddedPostgres) -> None:
    hba = server.pgdata / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    assert server.start() is False  # already running: still upgraded
    refused = psql_as_nobody(server.port)
    assert refused.returncode != 0 and "password" in refused.stderr
