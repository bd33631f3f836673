"""Findings 4 and 12: tokens failed open, and `rowcast token` changed the type of scope values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt
import psycopg
import pytest

from rowcast.auth import decode_token
from tests.security.conftest import SECRET, bearer, token
from tests.servers import Running, ws_connect

AConn = psycopg.AsyncConnection[tuple[Any, ...]]
LOOKALIKE_CLAIM = "r\u043ewcast"  # with a Cyrillic o
LOOKALIKE_BOOKS = "b\u043e\u043eks"


def forge(grant: Any = None, *, claim: str = "rowcast", omit: bool = False) -> str:
    """A correctly signed token carrying exactly this grant (what a buggy issuer might mint)."""
    claims: dict[str, Any] = {"sub": "mallory", "aud": "rowcast", "exp": int(time.time()) + 600}
    if not omit:
        claims[claim] = grant
    return jwt.encode(claims, SECRET, algorithm="HS256")


FULL = {"read": "*", "write": "*", "scopes": {}}


async def _post_author(api: Running, tok: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(api.base + "/api/authors", json={"name": "Mallory"}, headers=bearer(tok)) as resp,
    ):
        return resp.status, await resp.json()


async def _list_books(api: Running, tok: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(api.base + "/api/books", headers=bearer(tok)) as resp,
    ):
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("make", "status"),
    [
        pytest.param(lambda: forge(omit=True), 403, id="no-rowcast-claim"),
        pytest.param(lambda: forge([]), 401, id="claim-is-a-list"),
        pytest.param(lambda: forge(None), 401, id="claim-is-null"),
        pytest.param(lambda: forge(FULL, claim=LOOKALIKE_CLAIM), 403, id="look-alike-claim-name"),
        pytest.param(lambda: forge({}), 403, id="empty-grant"),
        pytest.param(lambda: forge({**FULL, "admin": True}), 401, id="unknown-grant-key"),
        pytest.param(lambda: forge({"read": None, "write": None}), 401, id="null-tables"),
        pytest.param(lambda: forge({"read": ["Authors"], "write": ["Authors"]}), 401, id="upper-case-table"),
        pytest.param(lambda: forge({"read": "*", "write": [LOOKALIKE_BOOKS]}), 401, id="look-alike-table"),
    ],
)
async def test_malformed_or_missing_grants_never_write(
    api: Running, make: Callable[[], str], status: int
) -> None:
    # Minted when the test runs, not at collection: the suite may take longer than a token lives.
    got, body = await _post_author(api, make())
    assert got == status, body
    assert body["error"] == ("unauthorized" if status == 401 else "forbidden")


@pytest.mark.parametrize(
    ("scopes", "status"),
    [
        pytest.param({"Books": {"owner": "alice"}}, 401, id="upper-case-table"),
        pytest.param({LOOKALIKE_BOOKS: {"owner": "alice"}}, 401, id="look-alike-table"),
        pytest.param({"book": {"owner": "alice"}}, 403, id="unknown-table"),
        pytest.param({"books": {"missing_column": None}}, 403, id="unknown-column"),
        pytest.param({"books": {"Owner": "alice"}}, 401, id="upper-case-column"),
        pytest.param({"books": {}}, 401, id="empty-scope"),
        pytest.param({"books": {"owner": ["alice"]}}, 401, id="list-value"),
        pytest.param({"books": {"owner": 42}}, 403, id="number-for-a-text-column"),
    ],
)
async def test_scopes_that_cannot_be_enforced_are_refused_by_the_api(
    api: Running, aconn: AConn, scopes: dict[str, Any], status: int
) -> None:
    await aconn.execute("INSERT INTO books (title, owner) VALUES ('bob secret', 'bob')")
    got, body = await _list_books(api, forge({"read": ["books"], "write": [], "scopes": scopes}))
    assert got == status, body
    assert "bob secret" not in json.dumps(body)


@pytest.mark.parametrize(
    "scopes",
    [
        pytest.param({"book": {"owner": "alice"}}, id="unknown-table"),
        pytest.param({"books": {"missing_column": None}}, id="unknown-column"),
    ],
)
async def test_scopes_that_cannot_be_enforced_are_refused_by_the_notifier(
    notifier: Running, scopes: dict[str, Any]
) -> None:
    tok = forge({"read": ["books"], "write": [], "scopes": scopes})
    async with ws_connect(notifier.base, headers=bearer(tok)) as client:
        reply = await client.subscribe()
    assert reply["type"] == "error" and reply["code"] == "forbidden"
    async with (
        aiohttp.ClientSession() as http,
        http.get(notifier.base + "/sse", params={"table": "books"}, headers=bearer(tok)) as resp,
    ):
        assert resp.status == 403 and (await resp.json())["error"] == "forbidden"


async def test_a_token_without_the_rowcast_claim_reads_nothing_from_the_notifier(notifier: Running) -> None:
    async with ws_connect(notifier.base, headers=bearer(forge(omit=True))) as client:
        reply = await client.subscribe()
    assert reply["type"] == "error" and reply["code"] == "forbidden"


def rowcast_token(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rowcast.cli", "token", "--sub", "u", *args],
        env={**os.environ, "ROWCAST_JWT_SECRET": SECRET},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_cli_scope_values_stay_text_unless_typed(api: Running, notifier: Running, aconn: AConn) -> None:
    issued = rowcast_token("--read", "books", "--scope", "books.owner=00123")
    assert issued.returncode == 0, issued.stderr
    tok = issued.stdout.strip()
    assert decode_token(tok, SECRET).scope("books") == {"owner": "00123"}
    async with ws_connect(notifier.base, headers=bearer(tok)) as client:
        await client.subscribe()
        await aconn.execute(
            "INSERT INTO books (title, owner) VALUES ('for 123', '123'), ('for 00123', '00123')"
        )
        change = await client.until(lambda f: f["type"] == "change")
    assert change["row"]["title"] == "for 00123"
    status, body = await _list_books(api, tok)
    assert status == 200 and [b["title"] for b in body["items"]] == ["for 00123"]
    typed = rowcast_token("--scope", "books.num_pages:=42", "--scope", 'books.owner:="7"')
    assert typed.returncode == 0, typed.stderr
    assert decode_token(typed.stdout.strip(), SECRET).scope("books") == {"num_pages": 42, "owner": "7"}
    bad = rowcast_token("--scope", "Books.owner=x")
    assert bad.returncode == 2 and "invalid table" in bad.stderr
    assert (
        "=TEXT"
        in subprocess.run(
            [sys.executable, "-m", "rowcast.cli", "token", "--help"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )


def test_the_grant_schema_is_one_function_shared_by_issuer_and_verifier() -> None:
    from rowcast import auth

    with pytest.raises(auth.RowcastError):
        auth.issue_token(SECRET, "u", read=["Books"])
    assert decode_token(token("u", read=["books"]), SECRET).read == frozenset({"public.books"})
    assert decode_token(token("u"), SECRET).read is None  # read=None: every table, as "*"


async def test_an_unknown_scope_column_refuses_only_its_own_table_on_the_notifier(notifier: Running) -> None:
    tok = forge({"read": ["books", "authors"], "write": [], "scopes": {"books": {"shelf": "A"}}})
    async with ws_connect(notifier.base, headers=bearer(tok)) as client:
        assert (await client.subscribe(ref="b"))["code"] == "forbidden"
        assert (await client.subscribe(ref="a", table="authors"))["type"] == "subscribed"


async def test_long_poll_refuses_a_scope_on_an_unknown_table(notifier: Running) -> None:
    tok = forge({"read": ["books"], "write": [], "scopes": {"book": {"owner": "alice"}}})
    async with (
        aiohttp.ClientSession() as http,
        http.get(notifier.base + "/changes", params={"table": "books"}, headers=bearer(tok)) as resp,
    ):
        assert resp.status == 403
