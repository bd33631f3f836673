import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";

import { connect, PresenceBook, presenceFrame } from "../../web/rowcast.js";
import { FakeClock, FakeEventSource, FakeWebSocket } from "./fakes.mjs";

let clock;

beforeEach(() => {
  clock = new FakeClock();
  FakeWebSocket.reset();
  FakeEventSource.reset();
});

function open(options = {}) {
  return connect("http://rowcast.test:8080", {
    WebSocket: FakeWebSocket,
    EventSource: FakeEventSource,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => 0.5,
    watchBrowser: false,
    ...options,
  });
}

const seen = (ref, id, who, state, session = `s-${who}`) => ({
  type: "presence", ref, schema: "public", table: "books", pk: { id }, who, session, state, since: "2026-12-03T19:00:00+00:00",
});

describe("PresenceBook (pure)", () => {
  test("an announcement is kept until withdrawn; repeating it changes nothing", () => {
    const book = new PresenceBook();
    assert.equal(book.announce({ id: 7 }, "viewing"), true);
    assert.equal(book.announce({ id: 7 }, "viewing"), false);
    assert.equal(book.announce({ id: 7 }, "editing"), true);
    assert.deepEqual(book.announced(), [{ pk: { id: 7 }, state: "editing" }]);
    assert.equal(book.announce({ id: 7 }, null), true);
    assert.deepEqual(book.announced(), []);
    assert.throws(() => book.announce({ id: 7 }, "typing"), TypeError);
  });

  test("entries are keyed by session and row; state null removes one", () => {
    const book = new PresenceBook();
    book.apply(seen("s1", 7, "alice", "viewing"));
    book.apply(seen("s1", 7, "alice", "editing"));
    book.apply(seen("s1", 7, "bob", "viewing"));
    book.apply(seen("s1", 8, "bob", "viewing"));
    assert.deepEqual(book.on({ id: 7 }).map((e) => [e.who, e.state]), [["alice", "editing"], ["bob", "viewing"]]);
    book.apply(seen("s1", 7, "alice", null));
    assert.deepEqual(book.on({ id: 7 }).map((e) => e.who), ["bob"]);
  });

  test("an update that changes the key moves this page's own announcement along", () => {
    const book = new PresenceBook();
    book.announce({ id: 3 }, "editing");
    book.announce({ id: 9 }, "viewing");
    assert.equal(book.follow({ type: "change", op: "update", pk: { id: 3 }, row: {}, old: { title: "x" } }), false);
    assert.equal(book.follow({ type: "change", op: "update", pk: { id: 8 }, row: {}, old: { id: 7 } }), false, "not ours");
    assert.equal(book.follow({ type: "change", op: "update", pk: { id: 30 }, row: {}, old: { id: 3, title: "x" } }), true);
    assert.deepEqual(book.announced(), [{ pk: { id: 9 }, state: "viewing" }, { pk: { id: 30 }, state: "editing" }]);
    // A page that still names the old key means the row: it withdraws the new key.
    assert.deepEqual(book.resolve({ id: 3 }), { id: 30 });
    assert.equal(book.announce({ id: 3 }, null), true);
    assert.deepEqual(book.announced(), [{ pk: { id: 9 }, state: "viewing" }]);
    assert.deepEqual(book.resolve({ id: 3 }), { id: 3 }, "withdrawn: the alias goes too");
    // Onto a key already announced: editing wins.
    book.announce({ id: 1 }, "viewing");
    book.announce({ id: 2 }, "editing");
    assert.equal(book.follow({ type: "change", op: "update", pk: { id: 2 }, row: {}, old: { id: 1 } }), true);
    assert.deepEqual(book.announced().filter((a) => a.pk.id !== 9), [{ pk: { id: 2 }, state: "editing" }]);
    // A new row under the old key: that key names the new row again.
    assert.equal(book.follow({ type: "change", op: "insert", pk: { id: 1 }, row: {} }), true);
    assert.equal(book.announce({ id: 1 }, "viewing"), true);
    assert.deepEqual(book.announced().map((a) => [a.pk.id, a.state]), [[9, "viewing"], [2, "editing"], [1, "viewing"]]);
  });

  test("presenceFrame carries the name only when given", () => {
    assert.deepEqual(presenceFrame("s1", { id: 1 }, "viewing"), { type: "presence", ref: "s1", pk: { id: 1 }, state: "viewing" });
    assert.equal(presenceFrame("s1", { id: 1 }, null, "Ann").name, "Ann");
  });
});

describe("presence over a connection", () => {
  test("announced once subscribed, again after a reconnect; the list clears on each new socket", () => {
    const lists = [];
    const connection = open({ name: () => "Ann" });
    const sub = connection.subscribe({ table: "books", onChange() {}, onPresence: (list) => lists.push(list) });
    sub.announce({ id: 7 }, "editing");
    let ws = FakeWebSocket.last;
    ws.serverOpen();
    assert.deepEqual(ws.frames("presence"), [], "nothing before the server acknowledges the subscription");
    ws.serverSend({ type: "subscribed", ref: "s1", cursor: "c1" });
    assert.deepEqual(ws.frames("presence"), [{ type: "presence", ref: "s1", pk: { id: 7 }, state: "editing", name: "Ann" }]);

    ws.serverSend(seen("s1", 7, "bob", "viewing"));
    assert.deepEqual(sub.presence({ id: 7 }).map((e) => e.who), ["bob"]);

    ws.serverClose(1006);
    assert.deepEqual(lists.at(-1), [], "who else is there is unknown while disconnected");
    clock.advance(10_000);
    ws = FakeWebSocket.last;
    ws.serverOpen();
    ws.serverSend({ type: "subscribed", ref: "s1", cursor: "c1" });
    assert.deepEqual(ws.frames("presence").map((f) => [f.pk.id, f.state]), [[7, "editing"]]);
  });

  test("a re-keyed row's announcement is announced under its new key after a reconnect", () => {
    const connection = open();
    const sub = connection.subscribe({ table: "books", onChange() {} });
    let ws = FakeWebSocket.last;
    ws.serverOpen();
    ws.serverSend({ type: "subscribed", ref: "s1", cursor: "c1" });
    sub.announce({ id: 3 }, "editing");
    ws.serverSend({ type: "change", ref: "s1", id: "5", op: "update", schema: "public", table: "books", pk: { id: 30 }, row: { id: 30 }, old: { id: 3 } });
    assert.equal(ws.frames("presence").length, 1, "nothing sent: the server moved it itself");
    ws.serverClose(1006);
    clock.advance(10_000);
    ws = FakeWebSocket.last;
    ws.serverOpen();
    ws.serverSend({ type: "subscribed", ref: "s1", cursor: "c1" });
    assert.deepEqual(ws.frames("presence").map((f) => [f.pk.id, f.state]), [[30, "editing"]]);
    sub.announce({ id: 3 }, null); // a page that has not caught up names the old key
    assert.deepEqual(ws.frames("presence").map((f) => [f.pk.id, f.state]), [[30, "editing"], [30, null]]);
  });

  test("withdrawn announcements are sent as state null and not announced again", () => {
    const connection = open();
    const sub = connection.subscribe({ table: "books", onChange() {} });
    const ws = FakeWebSocket.last;
    ws.serverOpen();
    ws.serverSend({ type: "subscribed", ref: "s1", cursor: "c1" });
    sub.announce({ id: 3 }, "viewing");
    sub.announce({ id: 3 }, null);
    assert.deepEqual(ws.frames("presence").map((f) => f.state), ["viewing", null]);
    sub.unsubscribe();
    assert.deepEqual(ws.frames("unsubscribe"), [{ type: "unsubscribe", ref: "s1" }]);
    assert.equal(ws.frames("presence").length, 2);
  });
});
