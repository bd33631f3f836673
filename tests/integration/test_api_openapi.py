"""The OpenAPI document stays true: it lists exactly the app's routes, and the live app keeps to it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from rowcast.api import openapi
from rowcast.api.app import create_app
from rowcast.api.resources import RESOURCES
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.test_api_support import SECRET, api_client, token
from tests.integration.test_api_support import settings as api_settings

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
EXAMPLES = 20  # per operation and generation mode: enough to cross every branch, quick enough for CI
# Invalid input may also be refused for its size (413), for naming a version that is not current
# (412), or before it is read at all by a token without the grant (403).
REJECTIONS = ["400", "401", "403", "404", "405", "412", "413", "415", "422", "428"]
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}
)


async def test_the_served_document_is_the_generated_one(db_url: str) -> None:
    async with api_client(db_url) as api:
        served = await (await api.get("/api/openapi.json")).json()
    assert served == openapi.document(RESOURCES, api_settings(db_url))


@contextmanager
def serving(app: web.Application) -> Iterator[str]:
    """Run `app` on a real socket in a thread with its own event loop; yields the base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    thread = threading.Thread(target=loop.run_forever, name="api-under-test")
    thread.start()

    async def start() -> str:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    try:
        yield asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=60)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


@pytest.mark.parametrize("auth", ["open", "token"])
def test_schemathesis_finds_no_server_error_and_no_response_outside_the_schema(
    db_url: str, auth: str
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:  # rows for the generated ids to hit
        conn.execute(
            "INSERT INTO books (title, owner) SELECT 'b' || g, 'o' || g % 2 FROM generate_series(1, 20) g"
        )
        conn.execute("INSERT INTO authors (name) SELECT 'a' || g FROM generate_series(1, 20) g")
    config = api_settings(db_url, max_body_bytes=4096, auth=auth, jwt_secret=SECRET)
    # In token mode: a token that may read both tables, write books only, and only rows owned by o1.
    headers = (
        token("o1", read=["books", "authors"], write=["books"], scopes=["books.owner=o1"])
        if auth == "token"
        else {}
    )
    schema = schemathesis.openapi.from_dict(openapi.document(RESOURCES, config), config=CONFIG)
    with serving(create_app(config)) as base_url:
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), f"the document has an unusable operation: {result.err()}"
            operation = result.ok()
            # Health and the document take no input that could be invalid: nothing negative to send.
            fixed = operation.path in ("/api/healthz", "/api/openapi.json")
            for mode in (
                (GenerationMode.POSITIVE,) if fixed else (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            ):

                @given(case=operation.as_strategy(generation_mode=mode, headers=headers))
                @settings(
                    max_examples=EXAMPLES,
                    derandomize=True,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                def check(case: schemathesis.Case[Any]) -> None:
                    case.call_and_validate(base_url=base_url, checks=CHECKS)

                check()
