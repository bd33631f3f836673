import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";

import { ApiError, ConflictError, connect, ifMatch, LiveCollection, newRequestId } from "../../web/rowcast.js";
import { FakeClock, FakeWebSocket, fakeFetch, flush } from "./fakes.mjs";

const BASE = "http://rowcast.test";
let clock;

beforeEach(() => {
  clock = new FakeClock();
  FakeWebSocket.reset();
});

const book = (id, title, version = 1) => ({ id, title, author: "", num_pages: null, version });

function setup({ rows = [book(1, "Dune")], cursor = "snap1", handler, withConnection = true } = {}) {
  let snapshot = { items: rows, cursor, total: rows.length, limit: 500, offset: 0 };
  const api = fakeFetch(
    handler ??
      ((call) => {
        if (call.method === "GET") return { body: snapshot };
        if (call.method === "DELETE") return { status: 204 };
        const id = Number(call.url.pathname.split("/").at(-1));
        const current = snapshot.items.find((r) => r.id === id);
        return { status: 200, body: { ...current, ...call.body, version: (current?.version ?? 0) + 1 } };
      }),
  );
  const connection = withConnection
    ? connect(BASE, { WebSocket: FakeWebSocket, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: clock.now, watchBrowser: false })
    : null;
  const changes = [];
  const resets = [];
  const books = new LiveCollection({
    baseUrl: BASE,
    resource: "books",
    connection,
    fetch: api.fetch,
    actor: () => "alice",
    onChange: (c) => changes.push(c),
    onReset: (r) => resets.push(r),
  });
  return { books, api, changes, resets, setSnapshot: (s) => (snapshot = s) };
}

const event = (id, op, row, extra = {}) => ({ type: "change", ref: "s1", id, schema: "public", table: "books", op, pk: { id: row.id }, row: op === "delete" ? null : row, old: null, actor: { user: "postgres", app: "psql", actor: null, request_id: null }, ...extra });

describe("snapshot then changes", () => {
  test("loads GET /api/books and subscribes from the snapshot's cursor", async () => {
    const { books, api, resets } = setup();
    await books.load();
    assert.equal(api.calls[0].url.href, `${BASE}/api/books?limit=500&sort=id`);
    assert.deepEqual(resets[0].map((r) => r.title), ["Dune"]);
    const ws = FakeWebSocket.last;
    ws.serverOpen();
    assert.deepEqual(ws.frames("subscribe"), [{ type: "subscribe", ref: "s1", table: "books", cursor: "snap1" }]);
  });

  test("loads page after page by key, and subscribes from the first page's cursor", async () => {
    const all = Array.from({ length: 5 }, (_, i) => book(i + 1, `b${i + 1}`));
    const { books, api, resets } = setup({
      handler: (call) => {
        const after = Number(call.url.searchParams.get("id.gt") ?? 0);
        const limit = Number(call.url.searchParams.get("limit"));
        const items = all.filter((r) => r.id > after).slice(0, limit);
        return { body: { items, cursor: `snap-after-${after}`, total: all.length, limit } };
      },
    });
    books.limit = 2;
    await books.load();
    assert.deepEqual(
      api.calls.map((c) => c.url.search),
      ["?limit=2&sort=id", "?limit=2&sort=id&id.gt=2", "?limit=2&sort=id&id.gt=4"],
    );
    assert.equal(resets[0].length, 5);
    assert.equal(books.cursor, "snap-after-0");
  });

  test("a server with a smaller page limit gets its own default page size", async () => {
    const { books, api } = setup({
      handler: (call) =>
        call.url.searchParams.get("limit") === "500"
          ? { status: 400, body: { error: "bad_query", message: "limit must be at most 100, not 500" } }
          : { body: { items: [book(1, "a")], cursor: "c", total: 1, limit: 50 } },
    });
    await books.load();
    assert.equal(api.calls[1].url.search, "?sort=id");
    assert.equal(books.rows.length, 1);
  });

  test("applies changes with the per-row rule and reports them once", async () => {
    const { books, changes } = setup();
    await books.load();
    const ws = FakeWebSocket.last;
    ws.serverOpen();
    ws.serverSend(event(10, "update", book(1, "Dune Messiah", 2), { old: { title: "Dune", version: 1 } }));
    ws.serverSend(event(10, "update", book(1, "Dune Messiah", 2)));
    ws.serverSend(event(11, "insert", book(2, "Emma")));
    ws.serverSend(event(12, "delete", book(2, "Emma")));
    assert.deepEqual(changes.map((c) => [c.kind, c.row?.title ?? null, c.mine]), [
      ["update", "Dune Messiah", false],
      ["insert", "Emma", false],
      ["delete", null, false],
    ]);
    assert.deepEqual(books.rows.map((r) => r.title), ["Dune Messiah"]);
  });

  test("resync_required reloads the snapshot and subscribes from its new cursor", async () => {
    const { books, setSnapshot, resets } = setup({ cursor: "old" });
    await books.load();
    const ws = FakeWebSocket.last;
    ws.serverOpen();
    setSnapshot({ items: [book(1, "Reloaded", 5)], cursor: "fresh", total: 1 });
    ws.serverSend({ type: "resync_required", ref: "s1", reason: "cursor_expired" });
    await flush();
    assert.equal(resets.length, 2);
    assert.equal(books.get(1).title, "Reloaded");
    assert.deepEqual(ws.frames("subscribe").at(-1), { type: "subscribe", ref: "s2", table: "books", cursor: "fresh" });
  });
});

describe("REST writes", () => {
  test("update sends If-Match of the held version, X-Request-ID and X-Actor; its echo is mine", async () => {
    let release;
    const gate = new Promise((resolve) => (release = resolve));
    const { books, api, changes } = setup({
      handler: async (call) => {
        if (call.method === "GET") return { body: { items: [book(1, "Dune")], cursor: "c", total: 1 } };
        await gate;
        return { body: book(1, "Dune!", 2) };
      },
    });
    await books.load();
    FakeWebSocket.last.serverOpen();
    const written = books.update(1, { title: "Dune!" });
    await flush();
    const call = api.calls.at(-1);
    assert.equal(call.method, "PATCH");
    assert.equal(call.url.pathname, "/api/books/1");
    assert.equal(call.headers["If-Match"], '"1"');
    assert.equal(call.headers["X-Actor"], "alice");
    assert.match(call.headers["X-Request-ID"], /^[0-9a-f]{32}$/);
    assert.deepEqual(call.body, { title: "Dune!" });
    // The change event beats the HTTP reply: it is still recognised as ours ...
    const echo = event(20, "update", book(1, "Dune!", 2), { old: { title: "Dune", version: 1 } });
    echo.actor = { user: "rowcast", app: "rowcast-api", actor: "alice", request_id: call.headers["X-Request-ID"] };
    FakeWebSocket.last.serverSend(echo);
    release();
    await written;
    // ... and the reply, holding no newer version, changes nothing more.
    assert.deepEqual(changes.map((c) => [c.kind, c.mine, c.source]), [["update", true, "live"]]);
  });

  test("a reply that beats its echo is applied at once; the echo then changes nothing", async () => {
    const { books, api, changes } = setup();
    await books.load();
    FakeWebSocket.last.serverOpen();
    await books.update(1, { title: "Dune!" });
    const echo = event(20, "update", book(1, "Dune!", 2), { old: { title: "Dune", version: 1 } });
    echo.actor = { request_id: api.calls.at(-1).headers["X-Request-ID"] };
    FakeWebSocket.last.serverSend(echo);
    assert.deepEqual(changes.map((c) => [c.kind, c.source, c.changed.length, c.mine]), [["update", "rest", 2, true], ["update", "live", 0, true]]);
  });

  test("412 becomes a ConflictError carrying the server's current row", async () => {
    const current = book(1, "Changed in psql", 4);
    const { books } = setup({
      handler: (call) =>
        call.method === "GET"
          ? { body: { items: [book(1, "Dune", 3)], cursor: "c", total: 1 } }
          : { status: 412, body: { error: "precondition_failed", message: "version 3 is stale", current } },
    });
    await books.load();
    await assert.rejects(books.update(1, { title: "Mine" }), (error) => {
      assert.ok(error instanceof ConflictError);
      assert.ok(error instanceof ApiError);
      assert.equal(error.status, 412);
      assert.deepEqual(error.current, current);
      return true;
    });
  });

  test("overwrite sends the version it is given; force sends *", async () => {
    const { books, api } = setup();
    await books.load();
    await books.update(1, { title: "x" }, { version: 7 });
    assert.equal(api.calls.at(-1).headers["If-Match"], '"7"');
    await books.remove(1, { force: true });
    assert.equal(api.calls.at(-1).method, "DELETE");
    assert.equal(api.calls.at(-1).headers["If-Match"], "*");
  });

  test("without a live connection writes apply from the REST reply (plain REST mode)", async () => {
    const { books, changes } = setup({
      withConnection: false,
      handler: (call) => {
        if (call.method === "GET") return { body: { items: [book(1, "Dune")], cursor: "c", total: 1 } };
        if (call.method === "POST") return { status: 201, body: { ...call.body, id: 2, version: 1 } };
        if (call.method === "PATCH") return { body: { ...book(1, "Dune"), ...call.body, version: 2 } };
        return { status: 204 };
      },
    });
    await books.load();
    await books.create({ title: "Emma" });
    await books.update(1, { title: "Dune II" });
    await books.remove(2);
    assert.deepEqual(changes.map((c) => [c.kind, c.source]), [["insert", "rest"], ["update", "rest"], ["delete", "rest"]]);
    assert.deepEqual(books.rows.map((r) => r.title), ["Dune II"]);
  });

  test("API errors carry status, code and message", async () => {
    const { books } = setup({
      handler: (call) => (call.method === "GET" ? { body: { items: [], cursor: "c" } } : { status: 422, body: { error: "invalid", message: "title is required" } }),
    });
    await books.load();
    await assert.rejects(books.create({}), (error) => error instanceof ApiError && error.status === 422 && error.code === "invalid" && error.message === "title is required");
  });

  test("writing a row that is not loaded needs an explicit version", async () => {
    const { books } = setup();
    await books.load();
    await assert.rejects(books.update(99, { title: "x" }), (error) => error.status === 404);
  });
});

test("a 401 gets one fresh token and one retry", async () => {
  let n = 0;
  const api = fakeFetch((call) =>
    call.headers.Authorization === "Bearer fresh" ? { body: { items: [], cursor: "c" } } : { status: 401, body: { error: "unauthorized" } },
  );
  const books = new LiveCollection({ baseUrl: BASE, resource: "books", token: "stale", getToken: async () => (++n, "fresh"), fetch: api.fetch });
  await books.load();
  assert.equal(n, 1);
  assert.deepEqual(api.calls.map((c) => c.headers.Authorization), ["Bearer stale", "Bearer fresh"]);
});

test("If-Match quotes versions like the ETag", () => {
  assert.equal(ifMatch(3), '"3"');
  assert.equal(ifMatch("*"), "*");
  assert.throws(() => ifMatch(undefined), TypeError);
});

test("request ids are 128 random bits", () => {
  const ids = new Set(Array.from({ length: 100 }, newRequestId));
  assert.equal(ids.size, 100);
});
