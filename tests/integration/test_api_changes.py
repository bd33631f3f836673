"""API writes are stamped in the change log: "<actor> via api" with the request id."""

from __future__ import annotations

import os
import subprocess

import sqlalchemy as sa
from rowcast.api.state import ENGINE

from rowcast.embedded import binary
from tests.integration.test_api_support import SECRET, api_client, changes, create, token


async def test_api_writes_record_actor_request_id_and_application_name(db_url: str) -> None:
    async with api_client(db_url) as api:
        book = await create(
            api, "/api/books", {"title": "Dune"}, **{"X-Actor": "alice", "X-Request-ID": "req-42"}
        )
        patched = await api.patch(
            f"/api/books/{book['id']}", json={"title": "Dune!"}, headers={"If-Match": '"1"'}
        )
        deleted = await api.delete(f"/api/books/{book['id']}", headers={"If-Match": '"2"', "X-Actor": "bob"})
    ins, upd, dele = changes(db_url)
    assert (ins["op"], ins["application_name"], ins["actor"], ins["request_id"]) == (
        "insert",
        "api",
        "alice",
        "req-42",
    )
    assert (upd["op"], upd["actor"], upd["request_id"]) == (
        "update",
        "anonymous",
        patched.headers["X-Request-ID"],
    )
    assert (dele["op"], dele["actor"], dele["request_id"]) == (
        "delete",
        "bob",
        deleted.headers["X-Request-ID"],
    )
    assert len({ins["request_id"], upd["request_id"], dele["request_id"]}) == 3


async def test_token_writes_are_stamped_with_the_subject_and_ignore_x_actor(db_url: str) -> None:
    async with api_client(db_url, auth="token", jwt_secret=SECRET) as api:
        headers = {**token("carol"), "X-Actor": "someone-else"}
        await create(api, "/api/authors", {"name": "Austen"}, **headers)
    (change,) = changes(db_url)
    assert (change["table_name"], change["actor"], change["application_name"]) == ("authors", "carol", "api")


async def test_psql_write_has_no_actor_or_request_id(db_url: str) -> None:
    async with api_client(db_url) as api:
        book = await create(api, "/api/books", {"title": "Dune"}, **{"X-Actor": "alice"})
    result = subprocess.run(
        [
            str(binary("psql")),
            db_url,
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f"UPDATE books SET num_pages = 1 WHERE id = {int(book['id'])}",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "PGAPPNAME"},
    )
    assert result.returncode == 0, result.stderr
    _, typed = changes(db_url)
    assert (typed["application_name"], typed["actor"], typed["request_id"]) == ("psql", None, None)


async def test_rejected_writes_leave_no_change(db_url: str) -> None:
    async with api_client(db_url) as api:
        book = await create(api, "/api/books", {"title": "Dune"})
        stale = await api.patch(f"/api/books/{book['id']}", json={"title": "x"}, headers={"If-Match": '"9"'})
        invalid = await api.post("/api/books", json={"title": ""})
    assert (stale.status, invalid.status) == (412, 422)
    assert [c["op"] for c in changes(db_url)] == ["insert"]


async def test_the_stamp_is_transaction_local_and_does_not_leak_to_the_pooled_connection(db_url: str) -> None:
    async with api_client(db_url) as api:
        await create(api, "/api/books", {"title": "Dune"}, **{"X-Actor": "alice"})
        async with api.app[ENGINE].connect() as conn:
            stamped = await conn.execute(
                sa.text("SELECT current_setting('rowcast.actor', true), current_setting('application_name')")
            )
            actor, app = stamped.one()
    assert actor in (None, "") and app == "api"


async def test_percent_encoded_actor_names_beyond_ascii_are_recorded_decoded(db_url: str) -> None:
    async with api_client(db_url) as api:
        await create(api, "/api/books", {"title": "Cien años"}, **{"X-Actor": "Jos%C3%A9"})
    assert [c["actor"] for c in changes(db_url)] == ["José"]
