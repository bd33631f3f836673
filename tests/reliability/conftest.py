"""Fixtures of the reliability suite: the seed every random choice comes from, a restartable server."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from rowcast.embedded import EmbeddedPostgres
from tests.pg import install_with_demo

SEED_KEY = pytest.StashKey[int]()


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """ROWCAST_SEED=<n> replays a run's plan; otherwise a fresh seed, reported if the test fails."""
    value = int(os.environ.get("ROWCAST_SEED") or random.SystemRandom().randrange(1 << 31))
    request.node.stash[SEED_KEY] = value
    print(f"ROWCAST_SEED={value}")
    return value


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    seed = item.stash.get(SEED_KEY, None)
    if seed is not None and report.failed:
        report.sections.append(
            ("rowcast seed", f"replay this run's plan with: ROWCAST_SEED={seed} pytest '{item.nodeid}'")
        )
    return report


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A private embedded server, migrated, that the test may restart (the shared one must not be).

    Not under pytest's tmp_path: any other pytest session starting on the machine re-tightens
    /tmp/pytest-of-<user> to 0700, and the server's own user could then no longer reach its data
    directory to start again.
    """
    path = Path(tempfile.mkdtemp(prefix="rct-own-", dir="/tmp"))
    path.chmod(0o755)
    server = EmbeddedPostgres(path / "pg")
    try:
        server.start()
        install_with_demo(server.url())
        yield server
    finally:
        server.destroy()
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path
