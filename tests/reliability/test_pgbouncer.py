"""A notifier behind PgBouncer in transaction mode cannot LISTEN: it must refuse to start, clearly."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.pg import Server
from tests.servers import Process, free_port, wait_healthy, wait_port

PGBOUNCER = Path("/usr/sbin/pgbouncer")
pytestmark = pytest.mark.skipif(not PGBOUNCER.exists(), reason="Debian's pgbouncer is not installed")


class PgBouncer:
    def __init__(self, server: Server, pool_mode: str) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="rct-bouncer-", dir="/tmp"))
        self.dir.chmod(0o755)  # read by the unprivileged user pgbouncer switches to
        target = f"host={server.host} port={server.port} user={server.user}"
        if server.password:
            target += f" password={server.password}"
        config = self.dir / "pgbouncer.ini"
        config.write_text(
            f"[databases]\n* = {target}\n"
            f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = any\npool_mode = {pool_mode}\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
        )
        config.chmod(0o644)
        user = ["-u", "nobody"] if os.geteuid() == 0 else []  # pgbouncer refuses to run as root
        self.log = (self.dir / "pgbouncer.log").open("wb")
        self.proc = subprocess.Popen(
            [str(PGBOUNCER), *user, str(config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_port(self.port, 10)

    def url(self, db_url: str) -> str:
        info = conninfo_to_dict(db_url)
        return f"postgresql://{info.get('user') or 'postgres'}@127.0.0.1:{self.port}/{info['dbname']}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def bouncer(request: pytest.FixtureRequest, pg_server: Server) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(pg_server, request.param)
    yield bouncer
    bouncer.close()


@pytest.mark.parametrize("bouncer", ["transaction"], indirect=True)
async def test_notifier_behind_transaction_pooling_pgbouncer_exits_nonzero_with_a_clear_message(
    bouncer: PgBouncer, db_url: str
) -> None:
    notifier = Process(
        ["notifier", "--auth", "open", "--port", str(free_port()), "--database-url", bouncer.url(db_url)], {}
    ).start()
    assert notifier.proc is not None
    try:
        code: int | None = await asyncio.to_thread(notifier.proc.wait, 20)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        notifier.stop()
        output = notifier.output()
        notifier.close()
    assert code is not None, f"the notifier was still running 20 s after start:\n{output}"
    assert code != 0, output
    assert "PgBouncer in transaction mode" in output and "directly at Postgres" in output, output
    assert "Traceback" not in output, output


@pytest.mark.parametrize("bouncer", ["session"], indirect=True)
async def test_notifier_behind_session_pooling_pgbouncer_listens_normally(
    bouncer: PgBouncer, db_url: str
) -> None:
    port = free_port()
    notifier = Process(
        ["notifier", "--auth", "open", "--port", str(port), "--database-url", bouncer.url(db_url)], {}
    ).start()
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", 30)
    finally:
        assert notifier.stop() == 0
        notifier.close()
