"""Real `rowcast` processes to attack: the API and the notifier in token mode, `up` in open mode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from rowcast.auth import issue_token
from tests.servers import Running, rowcast_server

SECRET = "security-secret-" + "k" * 32
TOKEN_ENV = {"ROWCAST_AUTH": "token", "ROWCAST_JWT_SECRET": SECRET, "ROWCAST_LOG_LEVEL": "INFO"}


def token(sub: str = "alice", **grants: Any) -> str:
    return issue_token(SECRET, sub, **grants)


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


@pytest.fixture
async def notifier(db_url: str) -> AsyncIterator[Running]:
    """`rowcast notifier` in token mode."""
    async with rowcast_server("notifier", db_url, TOKEN_ENV) as server:
        yield server


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Running]:
    """`rowcast api` in token mode."""
    async with rowcast_server("api", db_url, TOKEN_ENV) as server:
        yield server


@pytest.fixture
async def up(db_url: str) -> AsyncIterator[Running]:
    """`rowcast up` in open mode (its default) on an existing database."""
    async with rowcast_server("up", db_url, {"ROWCAST_LOG_LEVEL": "INFO"}) as server:
        yield server
