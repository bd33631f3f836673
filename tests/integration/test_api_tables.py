"""Serving your own tables: reflected at start-up from ROWCAST_API_TABLES or `rowcast api --table`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import schemathesis
from aiohttp import test_utils
from rowcast.api.app import create_app
from rowcast.db import capture
from rowcast.notifier.app import create_app as create_notifier

from rowcast.errors import ConfigError
from tests.integration.test_api_support import SECRET, Client, create, settings, token
from tests.servers import Process, free_port, rowcast_server, serve, settings_for, wait_healthy, ws_connect

SCHEMA = """
CREATE TABLE customers (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name varchar(40) NOT NULL,
    vip boolean NOT NULL DEFAULT false,
    born date,
    profile jsonb,
    version integer NOT NULL DEFAULT 1
);
CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer text NOT NULL,
    total numeric(12, 2) NOT NULL DEFAULT 0,
    placed_at timestamptz NOT NULL DEFAULT now(),
    owner text,
    tags text[]
);
CREATE TABLE order_lines (
    order_id bigint NOT NULL,
    line_no integer NOT NULL,
    sku text NOT NULL,
    qty integer NOT NULL CHECK (qty > 0),
    cents bigint GENERATED ALWAYS AS (qty * 100) STORED,
    PRIMARY KEY (order_id, line_no)
);
CREATE SCHEMA sales;
CREATE TABLE sales."Q1" (code text PRIMARY KEY, amount numeric);
CREATE TABLE no_key (x integer);
"""
TABLES = ("customers", "orders", "order_lines", 'sales."Q1"')


@pytest.fixture
def shop(db_url: str) -> Iterator[str]:
    """A database holding an application's own tables next to rowcast's."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(SCHEMA)
    yield db_url


@asynccontextmanager
async def shop_api(db_url: str, **changes: Any) -> AsyncIterator[Client]:
    app = create_app(settings(db_url, **{"api_tables": TABLES, **changes}))
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        yield client


def xmin(db_url: str, sql: str) -> str:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return str(row[0])


async def test_a_table_of_your_own_is_404_until_you_choose_to_serve_it(shop: str) -> None:
    async with shop_api(shop, api_tables=()) as api:
        assert (await api.get("/api/orders")).status == 404
    async with shop_api(shop) as api:
        response = await api.get("/api/orders")
        assert response.status == 200 and (await response.json())["items"] == []


async def test_crud_with_xmin_as_the_etag(shop: str) -> None:
    async with shop_api(shop) as api:
        order = await create(api, "/api/orders", {"customer": "ada", "total": "12.50"})
        path = f"/api/orders/{order['id']}"
        assert order["total"] == 12.5 and order["tags"] is None
        read = await api.get(path)
        tag = read.headers["ETag"]
        assert tag == f'"{xmin(shop, "SELECT xmin::text FROM orders WHERE id = " + str(order["id"]))}"'
        changed = await api.patch(path, json={"total": 99.95}, headers={"If-Match": tag})
        assert changed.status == 200 and (await changed.json())["total"] == 99.95
        assert changed.headers["ETag"] != tag
        stale = await api.patch(path, json={"total": 1}, headers={"If-Match": tag})
        assert stale.status == 412
        assert (await stale.json())["current"]["total"] == 99.95
        assert stale.headers["ETag"] == changed.headers["ETag"]
        assert (await api.delete(path, headers={"If-Match": tag})).status == 412
        assert (await api.delete(path, headers={"If-Match": changed.headers["ETag"]})).status == 204
        assert (await api.get(path)).status == 404


async def test_numbers_keep_every_digit_both_ways(shop: str) -> None:
    body = '{"customer": "ada", "total": 1234567890.10}'
    async with shop_api(shop) as api:
        created = await api.post("/api/orders", data=body, headers={"Content-Type": "application/json"})
        profile = '{"name": "Ada", "profile": {"pi": 3.14159265358979323846264338327950288}}'
        ada = await api.post("/api/customers", data=profile, headers={"Content-Type": "application/json"})
        assert '"total":1234567890.10' in await created.text()
        assert '"pi":3.14159265358979323846264338327950288' in await ada.text()


async def test_a_version_column_is_the_etag_and_the_api_bumps_it(shop: str) -> None:
    async with shop_api(shop) as api:
        ada = await create(api, "/api/customers", {"name": "Ada", "profile": {"langs": ["en"]}})
        path = f"/api/customers/{ada['id']}"
        assert (await api.get(path)).headers["ETag"] == '"1"'
        first = await api.put(
            path,
            json={"id": ada["id"], "name": "Ada L.", "vip": True, "born": "1815-12-10", "profile": None},
            headers={"If-Match": '"1"'},
        )
        assert first.status == 200 and first.headers["ETag"] == '"2"'
        assert (await first.json())["born"] == "1815-12-10"
        stale = await api.patch(path, json={"vip": False}, headers={"If-Match": '"1"'})
        assert stale.status == 412 and stale.headers["ETag"] == '"2"'
    assert ada["profile"] == {"langs": ["en"]}


async def test_composite_and_text_keys_are_path_segments(shop: str) -> None:
    async with shop_api(shop) as api:
        line = await api.post("/api/order_lines", json={"order_id": 17, "line_no": 3, "sku": "a", "qty": 2})
        assert line.status == 201 and line.headers["Location"] == "/api/order_lines/17/3"
        assert (await line.json())["cents"] == 200
        assert (await api.get("/api/order_lines/17/3")).status == 200
        for missing in ("/api/order_lines/17/4", "/api/order_lines/17/x", "/api/order_lines/17"):
            assert (await api.get(missing)).status == 404, missing
        q1 = await api.post('/api/sales."Q1"', json={"code": "a/b c", "amount": 1})
        assert q1.headers["Location"] == "/api/sales.%22Q1%22/a%2Fb%20c"
        read = await api.get("/api/sales.%22Q1%22/a%2Fb%20c")
        assert read.status == 200 and (await read.json())["code"] == "a/b c"


async def test_values_are_checked_against_the_column_types(shop: str) -> None:
    async with shop_api(shop) as api:
        bad = await api.post(
            "/api/customers",
            json={"id": "x", "name": "n" * 41, "vip": "yes", "born": "1815-13-01"},
        )
        orders = await api.post("/api/orders", json={"id": 1, "total": "ten", "tags": ["a"]})
        lines = await api.post(
            "/api/order_lines", json={"order_id": 1, "line_no": 1, "sku": "a", "qty": 1, "cents": 5}
        )
        refused = await api.post("/api/order_lines", json={"order_id": 1, "line_no": 1, "sku": "a", "qty": 0})
        assert (bad.status, orders.status, lines.status) == (422, 422, 422)
        assert (await bad.json())["fields"] == {
            "id": "'x' is not a UUID",
            "name": "must be at most 40 characters",
            "vip": "must be true or false",
            "born": "'1815-13-01' is not an ISO 8601 date",
        }
        assert (await orders.json())["fields"] == {
            "id": "read-only field",
            "total": "'ten' is not a number",
            "tags": "read-only field: the API cannot check a TEXT[] value",
            "customer": "required",
        }
        assert (await lines.json())["fields"] == {"cents": "read-only field"}
        assert refused.status == 409
        assert (await refused.json())["constraint"] == "order_lines_qty_check"


async def test_filters_and_sort_take_every_comparable_column(shop: str) -> None:
    async with shop_api(shop) as api:
        for customer, total in (("a", "5.00"), ("b", "20.10"), ("c", "20.2")):
            await create(api, "/api/orders", {"customer": customer, "total": total})
        page = await (await api.get("/api/orders", params={"total.gt": "10", "sort": "-total"})).json()
        assert [o["customer"] for o in page["items"]] == ["c", "b"]
        dated = await api.get("/api/orders", params={"placed_at.lt": "2000-01-01T00:00:00Z"})
        assert (await dated.json())["total"] == 0
        for refused in ({"tags": "a"}, {"sort": "tags"}, {"total": "x"}):
            assert (await api.get("/api/orders", params=refused)).status == 400, refused
        assert (await api.get("/api/customers", params={"profile": "{}"})).status == 400


async def test_openapi_describes_each_served_table(shop: str) -> None:
    async with shop_api(shop) as api:
        document = await (await api.get("/api/openapi.json")).json()
    paths = document["paths"]
    assert {"/api/orders", "/api/order_lines/{order_id}/{line_no}", '/api/sales."Q1"/{code}'} <= set(paths)
    orders = document["components"]["schemas"]["OrdersCreate"]["properties"]
    assert "id" not in orders and orders["total"]["type"] == "number"
    assert document["components"]["schemas"]["Customers"]["properties"]["id"]["format"] == "uuid"
    schemathesis.openapi.from_dict(document).validate()


async def test_grants_and_scopes_apply_as_for_books(shop: str) -> None:
    async with shop_api(shop, auth="token", jwt_secret=SECRET) as api:
        reader = token("r", read=["orders"], write=[])
        alice = token("alice", read=["orders"], write=["orders"], scopes=["orders.owner=alice"])
        assert (await api.get("/api/orders", headers=reader)).status == 200
        assert (await api.post("/api/orders", json={"customer": "x"}, headers=reader)).status == 403
        assert (await api.get("/api/customers", headers=reader)).status == 403
        mine = await create(api, "/api/orders", {"customer": "x"}, **alice)
        assert mine["owner"] == "alice"
        other = await api.post("/api/orders", json={"customer": "y", "owner": "bob"}, headers=alice)
        assert other.status == 403


async def test_a_write_through_the_api_reaches_a_websocket_subscriber(shop: str) -> None:
    with psycopg.connect(shop, autocommit=True) as conn:
        capture.enable(conn, "public.order_lines")
    async with serve(create_notifier(settings_for(shop))) as notifier, shop_api(shop) as api:
        await wait_healthy(notifier)
        async with ws_connect(notifier) as client:
            assert (await client.subscribe(table="order_lines"))["type"] == "subscribed"
            await create(api, "/api/order_lines", {"order_id": 1, "line_no": 2, "sku": "s", "qty": 1})
            change = await client.until(lambda f: f["type"] == "change")
    assert change["op"] == "insert" and change["pk"] == {"order_id": 1, "line_no": 2}


@pytest.mark.parametrize(
    ("table", "message"),
    [("no_key", "no_key: it has no primary key"), ("nowhere", "nowhere: no such table")],
)
async def test_a_table_that_cannot_be_served_stops_the_start(shop: str, table: str, message: str) -> None:
    app = create_app(settings(shop, api_tables=(table,)))
    with pytest.raises(ConfigError, match=message):
        async with test_utils.TestServer(app):
            pass


@pytest.mark.parametrize("command", ["api", "up"])
async def test_rowcast_api_serves_the_tables_of_the_flag_and_the_environment(shop: str, command: str) -> None:
    env = {"ROWCAST_AUTH": "open", "ROWCAST_API_TABLES": "customers", "ROWCAST_WORKERS": "1"}
    async with (
        rowcast_server(command, shop, env, "--table", "orders") as server,
        aiohttp.ClientSession() as http,
    ):
        for path in ("/api/orders", "/api/customers"):
            async with http.get(server.base + path) as response:
                assert response.status == 200, path


def test_rowcast_api_refuses_a_table_without_a_key_in_one_line(shop: str) -> None:
    flags = ["--port", str(free_port()), "--database-url", shop, "--table", "no_key"]
    process = Process(["api", *flags], {"ROWCAST_AUTH": "open"})
    process.start()
    assert process.proc is not None
    assert process.proc.wait(30) == 2
    last = process.output().strip().splitlines()[-1]  # after the banner
    assert last == "rowcast: cannot serve public.no_key: it has no primary key, so its rows have no URL"


async def test_a_declaration_file_serves_tables_and_narrows_their_columns(shop: str, tmp_path: Path) -> None:
    declared = tmp_path / "tables.json"
    declared.write_text(
        json.dumps({"orders": {"filter": ["customer"], "sort": ["total"], "read_only": ["owner"]}})
    )
    async with shop_api(shop, api_tables=(), api_tables_file=declared) as api:
        assert (await api.get("/api/orders", params={"customer": "a", "sort": "-total"})).status == 200
        assert (await api.get("/api/orders", params={"total": "1"})).status == 400
        assert (await api.get("/api/orders", params={"sort": "customer"})).status == 400
        owner = await api.post("/api/orders", json={"customer": "a", "owner": "me"})
        assert (await owner.json())["fields"] == {"owner": "read-only field"}
        assert (await api.get("/api/customers")).status == 404


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "expected an object"),
        ("{", "is not JSON"),
        ('{"orders": {"filter": ["nope"]}}', r"cannot serve public.orders as declared: no such column"),
        ('{"customers": {"sort": ["profile"]}}', r"cannot filter or sort by \['profile'\]"),
        ('{"orders": {"colour": []}}', "give an object with any of filter, sort, read_only"),
    ],
)
async def test_a_bad_declaration_file_stops_the_start(
    shop: str, tmp_path: Path, content: str, message: str
) -> None:
    declared = tmp_path / "tables.json"
    declared.write_text(content)
    app = create_app(settings(shop, api_tables_file=declared))
    with pytest.raises(ConfigError, match=message):
        async with test_utils.TestServer(app):
            pass
