import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  apiUrl,
  canonicalJson,
  chooseTransport,
  closeAction,
  eventTable,
  canonicalTable,
  splitName,
  qualify,
  parseFrame,
  rowKey,
  SeenIds,
  sseUrl,
  statusAfterFailure,
  subscribeFrame,
  wsProtocols,
  wsUrl,
} from "../../web/rowcast.js";

describe("row keys", () => {
  test("canonical JSON sorts keys at every level", () => {
    assert.equal(canonicalJson({ b: 1, a: { d: [2, { z: 1, y: 2 }], c: null } }), '{"a":{"c":null,"d":[2,{"y":2,"z":1}]},"b":1}');
  });

  test("key order does not change a row key", () => {
    assert.equal(rowKey("books", { id: 7, isbn: "x" }), rowKey("books", { isbn: "x", id: 7 }));
  });

  test("row keys are qualified with the schema", () => {
    assert.equal(rowKey("books", { id: 1 }), rowKey("public.books", { id: 1 }));
    assert.notEqual(rowKey("books", { id: 1 }), rowKey("audit.books", { id: 1 }));
    assert.equal(eventTable({ schema: "audit", table: "log" }), "audit.log");
  });

  test("dotted names are read by Postgres's rules; a dot inside quotes is part of the name", () => {
    assert.deepEqual(splitName('co."x.y"'), ["co", "x.y"]);
    assert.deepEqual(splitName('"co.x".y'), ["co.x", "y"]);
    assert.deepEqual(splitName('Co.Books'), ["co", "books"]);
    assert.deepEqual(splitName('"a""b"'), ['a"b']);
    assert.notEqual(qualify('co."x.y"'), qualify('"co.x".y'));
    assert.equal(qualify('co."x.y"'), canonicalTable("co", "x.y"));
    assert.equal(eventTable({ schema: "co.x", table: "y" }), '"co.x".y');
    assert.equal(qualify(qualify('"co.x".y')), '"co.x".y');
    assert.throws(() => qualify("a.b.c"), /ambiguous/);
    assert.throws(() => splitName('"open'), /unterminated/);
    assert.throws(() => splitName("a..b"), /empty/);
  });

  test("undefined members are left out like JSON.stringify does", () => {
    assert.equal(canonicalJson({ a: 1, b: undefined }), '{"a":1}');
  });
});

describe("URLs", () => {
  test("the WebSocket URL follows the page's scheme and path", () => {
    assert.equal(wsUrl("http://h:8080"), "ws://h:8080/ws");
    assert.equal(wsUrl("https://h/app/?x=1#f"), "wss://h/app/ws");
  });

  test("the token travels as a subprotocol, never in the WebSocket URL", () => {
    assert.deepEqual(wsProtocols(null), ["rowcast.v1"]);
    assert.deepEqual(wsProtocols("a.b.c"), ["rowcast.v1", "bearer.a.b.c"]);
  });

  test("the SSE URL carries the subscription, cursor and token", () => {
    const url = new URL(sseUrl("http://h", { table: "books", where: { owner: { eq: "a&b" } }, columns: ["id", "title"], mode: "latest" }, "10:12:", "tok"));
    assert.equal(url.pathname, "/sse");
    assert.equal(url.searchParams.get("table"), "books");
    assert.deepEqual(JSON.parse(url.searchParams.get("where")), { owner: { eq: "a&b" } });
    assert.equal(url.searchParams.get("columns"), "id,title");
    assert.equal(url.searchParams.get("mode"), "latest");
    assert.equal(url.searchParams.get("cursor"), "10:12:");
    assert.equal(url.searchParams.get("token"), "tok");
  });

  test("the SSE URL leaves out what is not set", () => {
    assert.equal(sseUrl("http://h", { table: "books" }, null, null), "http://h/sse?table=books");
  });

  test("API URLs encode ids and skip empty query values", () => {
    assert.equal(apiUrl("http://h", "books", 7), "http://h/api/books/7");
    assert.equal(apiUrl("http://h/", "books", "a/b"), "http://h/api/books/a%2Fb");
    assert.equal(apiUrl("http://h", "books", undefined, { limit: 50, owner: null }), "http://h/api/books?limit=50");
  });
});

describe("frames", () => {
  test("subscribe frames carry only what is set", () => {
    assert.deepEqual(subscribeFrame("s1", { table: "books" }, null), { type: "subscribe", ref: "s1", table: "books" });
    assert.deepEqual(subscribeFrame("s3", { schema: "co.x", table: "y" }, null), {
      type: "subscribe",
      ref: "s3",
      table: "y",
      schema: "co.x",
    });
    assert.deepEqual(subscribeFrame("s2", { table: "books", where: { id: { gt: 1 } }, columns: ["id"], mode: "latest" }, "c"), {
      type: "subscribe",
      ref: "s2",
      table: "books",
      where: { id: { gt: 1 } },
      columns: ["id"],
      mode: "latest",
      cursor: "c",
    });
  });

  test("parseFrame refuses what is not a typed JSON object", () => {
    assert.equal(parseFrame("nope"), null);
    assert.equal(parseFrame("[1]"), null);
    assert.equal(parseFrame("null"), null);
    assert.equal(parseFrame('{"ref":"s1"}'), null);
    assert.deepEqual(parseFrame('{"type":"pong"}'), { type: "pong" });
  });

  test("SSE frames take their type from the event name", () => {
    assert.deepEqual(parseFrame('{"cursor":"c"}', "checkpoint"), { cursor: "c", type: "checkpoint" });
  });
});

describe("close decisions", () => {
  test("4001 refreshes the token and reconnects at once", () => {
    assert.deepEqual(closeAction(4001, { opened: true, canRefresh: true }), { reconnect: true, delay: "now", refreshToken: true, reason: "token expired" });
  });

  test("4001 without getToken gives up: the same token would fail again", () => {
    assert.equal(closeAction(4001, { opened: true, canRefresh: false }).reconnect, false);
  });

  test("a second immediate reconnect within a second backs off instead of looping", () => {
    assert.equal(closeAction(4001, { canRefresh: true, msSinceImmediate: 200 }).delay, "backoff");
    assert.equal(closeAction(4008, { msSinceImmediate: 200 }).delay, "backoff");
  });

  test("4008 reconnects at once and resumes", () => {
    assert.deepEqual(closeAction(4008, { opened: true }), { reconnect: true, delay: "now", refreshToken: false, reason: "slow consumer" });
  });

  test("1001 and lost connections back off", () => {
    for (const code of [1001, 1006, 1011, 4029]) {
      const action = closeAction(code, { opened: true, canRefresh: true });
      assert.equal(action.reconnect, true);
      assert.equal(action.delay, "backoff");
      assert.equal(action.refreshToken, false, `code ${code}`);
    }
  });

  test("failures that may hide a 401 refresh the token when possible", () => {
    assert.equal(closeAction(1006, { opened: false, canRefresh: true }).refreshToken, true);
    assert.equal(closeAction(1006, { transport: "sse", opened: true, canRefresh: true }).refreshToken, true);
    assert.equal(closeAction(1006, { opened: false, canRefresh: false }).refreshToken, false);
  });
});

describe("transport choice", () => {
  test("WebSocket first", () => {
    assert.equal(chooseTransport({}), "websocket");
  });

  test("SSE once the WebSocket could not open", () => {
    assert.equal(chooseTransport({ wsFailures: 1 }), "sse");
  });

  test("a WebSocket that opened once is kept through later outages", () => {
    assert.equal(chooseTransport({ wsOpened: true, wsFailures: 5 }), "websocket");
  });

  test("SSE sticks once it opened", () => {
    assert.equal(chooseTransport({ sseOpened: true, wsFailures: 3, sseFailures: 0 }), "sse");
  });

  test("while nothing opens, attempts alternate", () => {
    assert.equal(chooseTransport({ wsFailures: 1, sseFailures: 1 }), "websocket");
    assert.equal(chooseTransport({ wsFailures: 2, sseFailures: 1 }), "sse");
  });

  test("a forced or missing transport decides", () => {
    assert.equal(chooseTransport({ preferred: "sse" }), "sse");
    assert.equal(chooseTransport({ preferred: "websocket", wsFailures: 9 }), "websocket");
    assert.equal(chooseTransport({ hasWebSocket: false }), "sse");
    assert.equal(chooseTransport({ hasEventSource: false, wsFailures: 3 }), "websocket");
  });
});

describe("status and duplicates", () => {
  test("reconnecting until offlineAfter failures, then offline", () => {
    assert.equal(statusAfterFailure({ failures: 1, everLive: true, offlineAfter: 3 }), "reconnecting");
    assert.equal(statusAfterFailure({ failures: 2, everLive: false, offlineAfter: 3 }), "connecting");
    assert.equal(statusAfterFailure({ failures: 3, everLive: true, offlineAfter: 3 }), "offline");
  });

  test("offline also needs to have been down for offlineDelay: fast failures read reconnecting", () => {
    assert.equal(statusAfterFailure({ failures: 5, everLive: true, offlineAfter: 3, downForMs: 800, offlineDelay: 5000 }), "reconnecting");
    assert.equal(statusAfterFailure({ failures: 3, everLive: true, offlineAfter: 3, downForMs: 5000, offlineDelay: 5000 }), "offline");
  });

  test("SeenIds drops duplicates and forgets the oldest beyond its capacity", () => {
    const seen = new SeenIds(2);
    assert.equal(seen.add(1), true);
    assert.equal(seen.add(1), false);
    seen.add(2);
    seen.add(3);
    assert.equal(seen.has(1), false);
    assert.equal(seen.has(3), true);
  });
});
