"""A notifier behind PgBouncer in transaction mode cannot LISTEN: it must refuse to start, clearly."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator

import pytest

from tests.pg import Server
from tests.pgbouncer import PgBouncer, needs_pgbouncer
from tests.servers import Process, free_port, wait_healthy

pytestmark = needs_pgbouncer


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
    assert "ROWCAST_LISTEN_URL" in output, output  # the setting that fixes it
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
