"""Finding 14 (part): TRUNCATE and move-out events showed scoped subscribers another writer's
application name, address and actor. Who wrote is shown to a scoped subscriber only for rows in
its scope; against a real `rowcast notifier` in token mode.
"""

from __future__ import annotations

from typing import Any

import psycopg

from tests.security.conftest import bearer, token
from tests.servers import Running, ws_connect


def as_bob(db_url: str) -> psycopg.Connection[tuple[Any, ...]]:
    conn = psycopg.connect(db_url, autocommit=True, application_name="bobs-secret-tool")
    conn.execute("SET rowcast.actor = 'bob@example.com'")
    return conn


async def test_scoped_subscribers_see_other_writers_only_on_their_own_rows(
    notifier: Running, db_url: str
) -> None:
    alice = token("alice", read=["books"], scopes=["books.owner=alice"])
    with as_bob(db_url) as bob:
        bob.execute("INSERT INTO books (title, owner) VALUES ('shared', 'alice')")
        async with ws_connect(notifier.base, headers=bearer(alice)) as client:
            assert (await client.subscribe())["type"] == "subscribed"
            bob.execute("UPDATE books SET title = 'still hers' WHERE title = 'shared'")
            bob.execute("UPDATE books SET owner = 'bob' WHERE title = 'still hers'")  # moves out
            bob.execute("TRUNCATE books")
            frames = [await client.until(lambda f: f["type"] == "change") for _ in range(3)]
    in_scope, moved_out, truncate = frames
    assert in_scope["op"] == "update" and in_scope["actor"]["app"] == "bobs-secret-tool"
    assert in_scope["actor"]["actor"] == "bob@example.com"
    assert (moved_out["op"], moved_out.get("moved")) == ("delete", "out")
    assert truncate["op"] == "truncate"
    for frame in (moved_out, truncate):
        assert frame["actor"] is None, frame
        assert "bobs-secret-tool" not in str(frame) and "bob@example.com" not in str(frame)


async def test_unscoped_subscribers_still_see_who_truncated(notifier: Running, db_url: str) -> None:
    reader = token("carol", read=["books"])
    with as_bob(db_url) as bob:
        async with ws_connect(notifier.base, headers=bearer(reader)) as client:
            await client.subscribe()
            bob.execute("TRUNCATE books")
            frame = await client.until(lambda f: f["type"] == "change")
    assert frame["actor"]["app"] == "bobs-secret-tool"
