"""Issue 17 (5): the operator's view. `rowcast status`, the notifier's /status.json, the heartbeat
rows every notifier writes to rowcast.notifiers, and the gauges /metrics gained for alerts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from rowcast.auth import issue_token
from tests.servers import rowcast_server, wait_until, ws_connect

ROWCAST = str(Path(sys.executable).with_name("rowcast"))
SECRET = "status-secret-" + "s" * 32
TOKEN_ENV = {"ROWCAST_AUTH": "token", "ROWCAST_JWT_SECRET": SECRET}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ROWCAST, *args], capture_output=True, text=True, check=False, timeout=60)


def write_books(db_url: str, n: int) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for i in range(n):
            conn.execute("INSERT INTO books (title, author) VALUES (%s, 'status test')", (f"book {i}",))


async def status_json(base: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(base + "/status.json", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


def table(status: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [t for t in status["tables"] if t["table"] == name]
    return found


def test_table_activity_counts_each_tables_changes_per_minute(conn: psycopg.Connection[Any]) -> None:
    conn.execute("INSERT INTO books (title) SELECT 'b' || g FROM generate_series(1, 7) g")
    conn.execute("INSERT INTO authors (name) VALUES ('a')")
    rows = {r[1]: r for r in conn.execute("SELECT * FROM rowcast.table_activity(5)").fetchall()}
    books = rows["books"]
    assert books[2] == [0, 0, 0, 0, 7]  # oldest minute first, the last 60 s last
    assert books[3] == 7 and books[4] > 0 and books[5] is not None and books[5] <= books[6]
    assert rows["authors"][3] == 1


async def test_status_json_shows_tables_and_this_notifiers_clients_and_lag(db_url: str) -> None:
    async with rowcast_server("notifier", db_url, {"ROWCAST_AUTH": "open"}) as server:
        async with ws_connect(server.base) as client:
            assert (await client.subscribe("b", "books"))["type"] == "subscribed"
            await asyncio.to_thread(write_books, db_url, 20)
            for _ in range(20):
                await client.until(lambda f: f["type"] == "change")

            async def reported() -> dict[str, Any] | None:
                status = await status_json(server.base)
                mine = [n for n in status["notifiers"] if n["id"] == status["self"]]
                ok = mine and mine[0]["clients"] >= 1 and mine[0]["lag_samples"] > 0
                return status if ok else None

            status = await wait_until(reported, timeout=15, interval=0.5)
        books = table(status, "public.books")
        assert books["log_rows"] == 20 and books["per_minute"][-1] == 20
        assert books["changes_per_second"] == round(20 / 60, 3)
        assert books["log_bytes"] > 0 and books["oldest_change"] is not None
        assert books["wake_mode"] == "notify" and books["retention_seconds"] == 24 * 3600
        assert len(books["per_minute"]) == status["minutes"] == 15
        (me,) = [n for n in status["notifiers"] if n["id"] == status["self"]]
        assert me["alive"] and me["listening"] and me["reading"]
        assert me["clients_by_transport"]["ws"] == 1 and me["subscriptions"] == 1
        assert 0 <= me["lag_p50_ms"] <= me["lag_p99_ms"] < 5000
        assert 0 <= me["last_read_age_seconds"] < 5 and me["notify_queue_usage"] == 0.0
        async with aiohttp.ClientSession() as http, http.get(server.base + "/status.json?minutes=0") as resp:
            assert resp.status == 400 and (await resp.json())["error"] == "bad_value"
        # Pages asking at once share one read of the database (it scans the log).
        answers = await asyncio.gather(*(status_json(server.base) for _ in range(5)))
        assert len({a["at"] for a in answers}) == 1
        await asyncio.sleep(1.6)
        assert (await status_json(server.base))["at"] != answers[0]["at"]


async def test_every_replica_is_seen_from_any_one_and_leaves_when_it_stops(db_url: str) -> None:
    async with rowcast_server("notifier", db_url, {"ROWCAST_AUTH": "open"}) as one:
        async with rowcast_server("notifier", db_url, {"ROWCAST_AUTH": "open"}) as two:

            async def both() -> bool:
                return len((await status_json(one.base))["notifiers"]) == 2

            await wait_until(both, timeout=15, interval=0.3)
            pids = {n["pid"] for n in (await status_json(one.base))["notifiers"]}
            assert pids == {one.process.proc.pid, two.process.proc.pid}  # type: ignore[union-attr]

        async def one_left() -> bool:
            return [n["pid"] for n in (await status_json(one.base))["notifiers"]] == [one.process.proc.pid]  # type: ignore[union-attr]

        await wait_until(one_left, timeout=15, interval=0.3)  # a clean stop deletes its row


async def test_a_killed_replica_shows_as_down_from_the_others(db_url: str) -> None:
    async with rowcast_server("notifier", db_url, {"ROWCAST_AUTH": "open"}) as one:
        async with rowcast_server("notifier", db_url, {"ROWCAST_AUTH": "open"}) as two:

            async def both() -> bool:
                return len((await status_json(one.base))["notifiers"]) == 2

            await wait_until(both, timeout=15, interval=0.3)
            two.process.kill()  # SIGKILL: no clean-up, the row stays
            killed = two.process.proc.pid  # type: ignore[union-attr]

            async def down() -> dict[str, Any] | None:
                rows = {n["pid"]: n for n in (await status_json(one.base))["notifiers"]}
                return rows if killed in rows and not rows[killed]["alive"] else None

            rows = await wait_until(down, timeout=20, interval=0.5)
            assert rows[one.process.proc.pid]["alive"]  # type: ignore[union-attr]
            assert rows[killed]["seen_ago_seconds"] >= 10
            text = await asyncio.to_thread(cli, "status", "--database-url", db_url)
            assert any(f":{killed}:" in line and " down " in line for line in text.stdout.splitlines())


async def test_status_json_and_metrics_need_the_metrics_grant_in_token_mode(db_url: str) -> None:
    async with rowcast_server("notifier", db_url, TOKEN_ENV) as server, aiohttp.ClientSession() as http:
        async with http.get(server.base + "/status.json") as resp:
            assert resp.status == 401 and (await resp.json())["error"] == "unauthorized"
        reader = issue_token(SECRET, "alice", read=["books"])
        async with http.get(
            server.base + "/status.json", headers={"Authorization": f"Bearer {reader}"}
        ) as resp:
            assert resp.status == 403 and "metrics" in (await resp.json())["message"]
        ops = issue_token(SECRET, "ops", metrics=True)
        body = await status_json(server.base, {"Authorization": f"Bearer {ops}"})
        assert {t["table"] for t in body["tables"]} == {"public.authors", "public.books"}


async def test_metrics_carry_the_gauges_the_alerts_use(db_url: str) -> None:
    async with rowcast_server("notifier", db_url, {"ROWCAST_AUTH": "open"}) as server:
        await asyncio.to_thread(write_books, db_url, 3)
        async with aiohttp.ClientSession() as http, http.get(server.base + "/metrics") as resp:
            text = await resp.text()
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["rowcast_log_bytes"] > 0
    assert values["rowcast_retention_seconds"] == 24 * 3600
    assert 0 <= values["rowcast_last_read_age_seconds"] < 5
    assert values["rowcast_log_oldest_age_seconds"] >= 0
    # The notification queue is the cluster's: on a shared server (parallel workers) another
    # test's listener may hold a page of it. The gauge is a fraction; nothing of ours fills it.
    assert 0 <= values["rowcast_pg_notification_queue_usage"] < 0.01


async def test_rowcast_status_prints_tables_and_notifiers(db_url: str) -> None:
    async with rowcast_server("notifier", db_url, {"ROWCAST_AUTH": "open"}) as server:
        await asyncio.to_thread(write_books, db_url, 5)

        async def listed() -> bool:
            return any(n["listening"] and n["reading"] for n in (await status_json(server.base))["notifiers"])

        await wait_until(listed, timeout=15, interval=0.3)
        text = await asyncio.to_thread(cli, "status", "--database-url", db_url)
        as_json = await asyncio.to_thread(cli, "status", "--json", "--minutes", "3", "--database-url", db_url)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[1].startswith("wake-up mode notify · change log ")
    (books,) = [line for line in lines if line.startswith("public.books ")]
    cells = books.split()
    assert cells[1] == "0.08" and cells[2] == "▁" * 14 + "█" and cells[3] == "5"
    assert any(line.startswith("NOTIFIER") and "LAG P99" in line for line in lines)
    assert any(f":{server.process.proc.pid}:" in line and "listening" in line for line in lines)  # type: ignore[union-attr]
    # The README's example has the real output's shape: the same lines start the same way.
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = readme.split("```text\n", 1)[1].split("```", 1)[0].splitlines()
    for shown, real in zip(example, lines, strict=True):
        same = shown.split()[:1] == real.split()[:1] or shown.startswith("vm:")
        assert same and (shown.isupper() == real.isupper()), (shown, real)
    assert example[3].split() == lines[3].split() and example[7].split() == lines[7].split()  # headers
    assert as_json.returncode == 0, as_json.stderr
    status = json.loads(as_json.stdout)
    assert table(status, "public.books")["per_minute"] == [0, 0, 5]
    assert status["notifiers"][0]["pid"] == server.process.proc.pid  # type: ignore[union-attr]


def test_rowcast_status_says_so_in_one_line_when_postgres_is_down() -> None:
    result = cli("status", "--database-url", "postgresql://nobody@127.0.0.1:9/none")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("rowcast: cannot connect to Postgres")
