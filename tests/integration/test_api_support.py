"""Helpers the API tests share (this module holds no tests): a client on a real app and server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from aiohttp import test_utils, web
from rowcast.api.app import create_app

from rowcast.auth import issue_token
from rowcast.settings import Settings

Client = test_utils.TestClient[web.Request, web.Application]
SECRET = "test-secret-test-secret-test-secret"


def settings(db_url: str, **changes: Any) -> Settings:
    return Settings(database_url=db_url, **{"auth": "open", **changes})


@asynccontextmanager
async def api_client(db_url: str, **changes: Any) -> AsyncIterator[Client]:
    """A client talking HTTP to the API app alone (no notifier) on a real socket."""
    app = create_app(settings(db_url, **changes))
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        yield client


def token(sub: str, **grants: Any) -> dict[str, str]:
    """Authorization headers for a token issued the way `rowcast token` issues them."""
    return {"Authorization": f"Bearer {issue_token(SECRET, sub, **grants)}"}


async def create(client: Client, path: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = await client.post(path, json=body, headers=headers)
    assert response.status == 201, await response.text()
    result: dict[str, Any] = await response.json()
    return result


def changes(db_url: str) -> list[dict[str, Any]]:
    with psycopg.connect(db_url) as conn:
        cur = conn.execute(
            "SELECT id, op, table_name, pk, row, old, application_name, actor, request_id, xid::text "
            "FROM rowcast.changes ORDER BY id"
        )
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
