"""Debian's PgBouncer in front of the test Postgres, for the tests that run rowcast behind it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.pg import Server
from tests.servers import free_port, wait_port

PGBOUNCER = Path("/usr/sbin/pgbouncer")
needs_pgbouncer = pytest.mark.skipif(
    not PGBOUNCER.exists(),
    reason="Debian's pgbouncer is not installed (apt-get install pgbouncer; .ci/run does it)",
)


def config_text(server: Server, port: int, pool_mode: str, pool_size: int = 20) -> str:
    """pgbouncer.ini: every database of `server` on 127.0.0.1:`port`."""
    target = f"host={server.host} port={server.port} user={server.user}"
    if server.password:
        target += f" password={server.password}"
    return (
        f"[databases]\n* = {target}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = any\npool_mode = {pool_mode}\ndefault_pool_size = {pool_size}\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
    )


class PgBouncer:
    """A PgBouncer on a free loopback port. Clients connect without a password (auth_type any);
    PgBouncer logs in to Postgres with the test server's own credentials."""

    def __init__(self, server: Server, pool_mode: str, pool_size: int = 20) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="rct-bouncer-", dir="/tmp"))
        self.dir.chmod(0o755)  # read by the unprivileged user pgbouncer switches to
        config = self.dir / "pgbouncer.ini"
        config.write_text(config_text(server, self.port, pool_mode, pool_size))
        config.chmod(0o644)
        user = ["-u", "nobody"] if os.geteuid() == 0 else []  # pgbouncer refuses to run as root
        self.log = (self.dir / "pgbouncer.log").open("wb")
        self.proc = subprocess.Popen(
            [str(PGBOUNCER), *user, str(config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_port(self.port, 10)

    def url(self, db_url: str) -> str:
        """`db_url`'s database and user, through PgBouncer."""
        info = conninfo_to_dict(db_url)
        return f"postgresql://{info.get('user') or 'postgres'}@127.0.0.1:{self.port}/{info['dbname']}"

    def output(self) -> str:
        self.log.flush()
        return (self.dir / "pgbouncer.log").read_text(errors="replace")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
