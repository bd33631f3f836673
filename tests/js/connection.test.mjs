import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";

import { connect } from "../../web/rowcast.js";
import { FakeClock, FakeEventSource, FakeWebSocket, flush } from "./fakes.mjs";

let clock;

beforeEach(() => {
  clock = new FakeClock();
  FakeWebSocket.reset();
  FakeEventSource.reset();
});

function open(options = {}) {
  const statuses = [];
  const connection = connect("http://rowcast.test:8080", {
    WebSocket: FakeWebSocket,
    EventSource: FakeEventSource,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => 0.5,
    watchBrowser: false,
    onStatus: (status) => statuses.push(status),
    ...options,
  });
  return { connection, statuses };
}

function subscribeBooks(connection, extra = {}) {
  const changes = [];
  const sub = connection.subscribe({ table: "books", onChange: (e) => changes.push(e), ...extra });
  return { sub, changes };
}

const change = (ref, id, extra = {}) => ({ type: "change", ref, id, schema: "public", table: "books", op: "insert", pk: { id }, row: { id }, ...extra });

describe("WebSocket sessions", () => {
  test("opens /ws with the rowcast.v1 subprotocol and the bearer token", () => {
    open({ token: "jwt.x.y" });
    assert.equal(FakeWebSocket.last.url, "ws://rowcast.test:8080/ws");
    assert.deepEqual(FakeWebSocket.last.protocols, ["rowcast.v1", "bearer.jwt.x.y"]);
  });

  test("subscribes on open, and at once for subscriptions made while open", () => {
    const { connection, statuses } = open();
    subscribeBooks(connection, { where: { owner: { eq: "a" } }, cursor: "c0" });
    const ws = FakeWebSocket.last;
    assert.deepEqual(ws.sent, []);
    ws.serverOpen();
    assert.deepEqual(ws.frames("subscribe"), [{ type: "subscribe", ref: "s1", table: "books", where: { owner: { eq: "a" } }, cursor: "c0" }]);
    subscribeBooks(connection, { table: "authors" });
    assert.deepEqual(ws.frames("subscribe")[1], { type: "subscribe", ref: "s2", table: "authors" });
    assert.deepEqual(statuses, ["live"]);
  });

  test("changes reach their subscription; replayed duplicates are dropped", () => {
    const { connection } = open();
    const books = subscribeBooks(connection);
    const authors = subscribeBooks(connection, { table: "authors" });
    const ws = FakeWebSocket.last;
    ws.serverOpen();
    ws.serverSend(change("s1", 5));
    ws.serverSend(change("s2", 6, { table: "authors" }));
    ws.serverSend(change("s1", 5));
    ws.serverSend(change("s9", 7));
    assert.deepEqual(books.changes.map((c) => c.id), [5]);
    assert.deepEqual(authors.changes.map((c) => c.id), [6]);
  });

  test("a subscription is live once acknowledged; checkpoints move acknowledged cursors only", () => {
    const { connection } = open();
    const subStatuses = [];
    const a = subscribeBooks(connection, { onStatus: (s) => subStatuses.push(s) });
    const b = subscribeBooks(connection, { table: "authors", cursor: "b0" });
    const ws = FakeWebSocket.last;
    ws.serverOpen();
    assert.deepEqual(subStatuses, []);
    ws.serverSend({ type: "subscribed", ref: "s1", cursor: "c1" });
    assert.deepEqual(subStatuses, ["live"]);
    assert.equal(a.sub.cursor, "c1");
    ws.serverSend({ type: "checkpoint", cursor: "c2" });
    assert.equal(a.sub.cursor, "c2");
    assert.equal(b.sub.cursor, "b0");
  });

  test("unsubscribe tells the server and stops delivery", () => {
    const { connection } = open();
    const { sub, changes } = subscribeBooks(connection);
    const ws = FakeWebSocket.last;
    ws.serverOpen();
    sub.unsubscribe();
    assert.deepEqual(ws.frames("unsubscribe"), [{ type: "unsubscribe", ref: "s1" }]);
    ws.serverSend(change("s1", 5));
    assert.deepEqual(changes, []);
  });
});

describe("reconnecting", () => {
  test("a dropped socket reconnects with backoff and resumes from the last checkpoint", () => {
    const { connection, statuses } = open({ backoff: { base: 1000, cap: 8000 } });
    const { changes } = subscribeBooks(connection, { cursor: "c0" });
    let ws = FakeWebSocket.last;
    ws.serverOpen();
    ws.serverSend({ type: "subscribed", ref: "s1", cursor: "c0" });
    ws.serverSend(change("s1", 5));
    ws.serverSend({ type: "checkpoint", cursor: "c5" });
    ws.serverClose(1001, "shutting down");
    assert.equal(connection.status, "reconnecting");
    assert.deepEqual(clock.pending(), [500]); // full jitter, random() = 0.5 of a 1000 ms window
    clock.advance(499);
    assert.equal(FakeWebSocket.instances.length, 1);
    clock.advance(1);
    ws = FakeWebSocket.last;
    assert.equal(FakeWebSocket.instances.length, 2);
    ws.serverOpen();
    assert.deepEqual(ws.frames("subscribe"), [{ type: "subscribe", ref: "s1", table: "books", cursor: "c5" }]);
    // The replay repeats id 5: the application sees it once.
    ws.serverSend(change("s1", 5));
    ws.serverSend(change("s1", 6));
    assert.deepEqual(changes.map((c) => c.id), [5, 6]);
    assert.deepEqual(statuses, ["live", "reconnecting", "live"]);
  });

  test("offline after repeated failures, then live again; the window grows meanwhile", () => {
    const { connection, statuses } = open({ backoff: { base: 1000, cap: 8000 }, offlineAfter: 3, offlineDelay: 3000 });
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverClose(1006);
    const delays = [];
    for (let i = 0; i < 3; i++) {
      delays.push(clock.pending()[0]);
      clock.advance(clock.pending()[0]);
      FakeWebSocket.last.serverClose(1006);
    }
    assert.deepEqual(delays, [500, 1000, 2000]);
    assert.equal(connection.status, "offline");
    clock.advance(clock.pending()[0]);
    FakeWebSocket.last.serverOpen();
    assert.deepEqual(statuses, ["live", "reconnecting", "offline", "live"]);
  });

  test("4001 asks getToken for a fresh token and reconnects with it at once", async () => {
    let n = 0;
    const { connection } = open({ token: "old", getToken: async () => `fresh${++n}` });
    subscribeBooks(connection);
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverClose(4001, "token expired");
    assert.deepEqual(clock.pending(), [0]);
    clock.advance(0);
    await flush();
    assert.deepEqual(FakeWebSocket.last.protocols, ["rowcast.v1", "bearer.fresh1"]);
    assert.equal(connection.token, "fresh1");
  });

  test("4001 without getToken stops and shows offline", () => {
    const { connection } = open({ token: "old" });
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverClose(4001);
    assert.equal(connection.status, "offline");
    assert.deepEqual(clock.pending(), []);
  });

  test("getToken is asked first when no token was given", async () => {
    open({ getToken: async () => "t1" });
    assert.equal(FakeWebSocket.instances.length, 0);
    await flush();
    assert.deepEqual(FakeWebSocket.last.protocols, ["rowcast.v1", "bearer.t1"]);
  });

  test("a failing getToken is retried with backoff", async () => {
    let calls = 0;
    const { connection } = open({
      getToken: async () => {
        calls += 1;
        if (calls === 1) throw new Error("auth server down");
        return "t2";
      },
    });
    await flush();
    assert.equal(FakeWebSocket.instances.length, 0);
    assert.equal(clock.pending().length, 1);
    clock.advance(clock.pending()[0]);
    await flush();
    assert.equal(calls, 2);
    assert.deepEqual(FakeWebSocket.last.protocols, ["rowcast.v1", "bearer.t2"]);
    assert.equal(connection.token, "t2");
  });

  test("4008 (slow consumer) reconnects at once from the cursor", () => {
    const { connection } = open();
    subscribeBooks(connection);
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverSend({ type: "subscribed", ref: "s1", cursor: "c9" });
    FakeWebSocket.last.serverClose(4008, "slow consumer");
    assert.deepEqual(clock.pending(), [0]);
    clock.advance(0);
    FakeWebSocket.last.serverOpen();
    assert.equal(FakeWebSocket.last.frames("subscribe")[0].cursor, "c9");
  });

  test("a socket that never opens times out and counts as a failure", () => {
    const { connection } = open({ openTimeout: 5000, transport: "websocket" });
    const ws = FakeWebSocket.last;
    clock.advance(5000);
    assert.equal(ws.closedWith, 1000);
    assert.equal(connection.status, "connecting");
    assert.equal(clock.pending().length, 1);
  });

  test("silence gets a ping; no pong means the socket is dead", () => {
    const { connection } = open({ pingInterval: 1000, pongTimeout: 500 });
    const ws = FakeWebSocket.last;
    ws.serverOpen();
    clock.advance(1000);
    assert.deepEqual(ws.frames("ping"), [{ type: "ping" }]);
    ws.serverSend({ type: "pong" });
    clock.advance(1000);
    assert.equal(ws.frames("ping").length, 2);
    clock.advance(500);
    assert.equal(connection.status, "reconnecting");
    assert.equal(ws.closedWith, 1000);
  });

  test("reconnectNow skips the wait (the browser came back online)", () => {
    const { connection } = open({ backoff: { base: 10000 } });
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverClose(1006);
    assert.equal(FakeWebSocket.instances.length, 1);
    connection.reconnectNow();
    assert.equal(FakeWebSocket.instances.length, 2);
    assert.deepEqual(clock.pending(), [10000]); // only the new socket's open timeout
  });

  test("reconnectNow still refreshes the token when the pending retry would have", async () => {
    let n = 0;
    const { connection } = open({ token: "t0", getToken: async () => `t${++n}`, backoff: { base: 10000 } });
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverClose(4001);
    clock.advance(0);
    await flush();
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverClose(4001); // again within a second: backoff this time
    assert.equal(n, 1);
    assert.deepEqual(clock.pending(), [5000]);
    connection.reconnectNow();
    await flush();
    assert.equal(n, 2);
    assert.deepEqual(FakeWebSocket.last.protocols, ["rowcast.v1", "bearer.t2"]);
  });

  test("close() is final", () => {
    const { connection, statuses } = open();
    FakeWebSocket.last.serverOpen();
    connection.close();
    assert.equal(FakeWebSocket.last.closedWith, 1000);
    assert.deepEqual(clock.pending(), []);
    assert.deepEqual(statuses, ["live", "closed"]);
  });
});

describe("server frames", () => {
  test("resync_required hands over to onResync; resubscribe uses a fresh ref and the new cursor", () => {
    const { connection } = open();
    const resyncs = [];
    const { sub } = subscribeBooks(connection, { cursor: "old", onResync: (f) => resyncs.push(f) });
    const ws = FakeWebSocket.last;
    ws.serverOpen();
    ws.serverSend({ type: "resync_required", ref: "s1", reason: "cursor_expired" });
    assert.equal(resyncs[0].reason, "cursor_expired");
    assert.equal(sub.cursor, null);
    sub.resubscribe("snap");
    assert.deepEqual(ws.frames("subscribe").at(-1), { type: "subscribe", ref: "s2", table: "books", cursor: "snap" });
    assert.deepEqual(ws.frames("unsubscribe"), []);
  });

  test("without onResync the subscription carries on live from now", () => {
    const { connection } = open();
    subscribeBooks(connection, { cursor: "old" });
    const ws = FakeWebSocket.last;
    ws.serverOpen();
    ws.serverSend({ type: "resync_required", ref: "s1", reason: "cursor_expired" });
    assert.deepEqual(ws.frames("subscribe").at(-1), { type: "subscribe", ref: "s2", table: "books" });
  });

  test("a fatal error ends the subscription; it is not resent after a reconnect", () => {
    const { connection } = open();
    const errors = [];
    subscribeBooks(connection, { table: "nope", onError: (f) => errors.push(f.code) });
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverSend({ type: "error", ref: "s1", code: "unknown_table", message: "no such table" });
    assert.deepEqual(errors, ["unknown_table"]);
    FakeWebSocket.last.serverClose(1006);
    clock.advance(clock.pending()[0]);
    FakeWebSocket.last.serverOpen();
    assert.deepEqual(FakeWebSocket.last.frames("subscribe"), []);
  });

  test("errors without a ref go to the connection's onError", () => {
    const errors = [];
    open({ onError: (f) => errors.push(f.code) });
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverSend({ type: "error", code: "bad_json", message: "?" });
    FakeWebSocket.last.onmessage({ data: "not json" });
    assert.deepEqual(errors, ["bad_json"]);
  });
});

describe("SSE fallback", () => {
  test("a WebSocket that cannot open falls back to SSE at once, resuming from the cursor", () => {
    const { connection, statuses } = open({ token: "tok" });
    const { changes } = subscribeBooks(connection, { cursor: "c3", columns: ["id", "title"] });
    FakeWebSocket.last.serverClose(1006); // blocked by a proxy: never opened
    assert.deepEqual(clock.pending(), [0]);
    clock.advance(0);
    const es = FakeEventSource.instances[0];
    assert.equal(new URL(es.url).pathname, "/sse");
    assert.equal(es.params.get("cursor"), "c3");
    assert.equal(es.params.get("token"), "tok");
    assert.equal(es.params.get("columns"), "id,title");
    es.serverOpen();
    assert.equal(connection.transport, "sse");
    es.emit("subscribed", { cursor: "c3" });
    es.emit("change", { id: 8, table: "books", op: "insert", pk: { id: 8 }, row: { id: 8 } });
    es.emit("change", { id: 8, table: "books", op: "insert", pk: { id: 8 }, row: { id: 8 } });
    es.emit("checkpoint", { cursor: "c8" });
    assert.deepEqual(changes.map((c) => c.id), [8]);
    assert.deepEqual(statuses, ["live"]);
    // A stream failure: reconnect over SSE (it worked) from the checkpoint.
    es.fail();
    assert.equal(es.closed, true);
    assert.equal(connection.status, "reconnecting");
    clock.advance(clock.pending()[0]);
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(FakeEventSource.instances[1].params.get("cursor"), "c8");
  });

  test("once a WebSocket has opened, later failures retry the WebSocket", () => {
    const { connection } = open();
    subscribeBooks(connection);
    FakeWebSocket.last.serverOpen();
    FakeWebSocket.last.serverClose(1006);
    clock.advance(clock.pending()[0]);
    FakeWebSocket.last.serverClose(1006); // the server is down, not blocked
    clock.advance(clock.pending()[0]);
    assert.equal(FakeEventSource.instances.length, 0);
    assert.equal(FakeWebSocket.instances.length, 3);
  });

  test("an SSE error event with data is a server error frame, not a failure", () => {
    const errors = [];
    const { connection } = open({ transport: "sse" });
    subscribeBooks(connection, { table: "nope", onError: (f) => errors.push(f.code) });
    const es = FakeEventSource.instances[0];
    es.serverOpen();
    es.emit("error", { code: "unknown_table", message: "no such table" });
    assert.deepEqual(errors, ["unknown_table"]);
    assert.equal(es.closed, true); // the subscription ended: its stream is closed
    assert.equal(connection.status, "live");
  });

  test("SSE is live once every stream is open; unsubscribe closes its stream", () => {
    const { connection } = open({ transport: "sse" });
    const a = subscribeBooks(connection);
    subscribeBooks(connection, { table: "authors" });
    const [esA, esB] = FakeEventSource.instances;
    esA.serverOpen();
    assert.equal(connection.status, "connecting");
    esB.serverOpen();
    assert.equal(connection.status, "live");
    a.sub.unsubscribe();
    assert.equal(esA.closed, true);
    assert.equal(esB.closed, false);
  });

  test("an SSE close event ends the session with its close code", () => {
    const { connection } = open({ transport: "sse" });
    subscribeBooks(connection);
    const es = FakeEventSource.instances[0];
    es.serverOpen();
    es.emit("close", { type: "close", code: 4008, reason: "slow consumer" });
    assert.equal(es.closed, true);
    assert.equal(connection.status, "reconnecting");
    assert.deepEqual(clock.pending(), [0]); // 4008: at once
  });

  test("SSE retries refresh the token (EventSource hides a 401)", async () => {
    let n = 0;
    const { connection } = open({ transport: "sse", token: "t0", getToken: async () => `t${++n}` });
    subscribeBooks(connection);
    FakeEventSource.instances[0].serverOpen();
    FakeEventSource.instances[0].fail();
    clock.advance(clock.pending()[0]);
    await flush();
    assert.equal(FakeEventSource.instances[1].params.get("token"), "t1");
    assert.equal(connection.token, "t1");
  });
});
