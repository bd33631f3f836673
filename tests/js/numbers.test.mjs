import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";

import { connect, LiveCollection, numberIsExact, parseFrame, parseJson } from "../../web/rowcast.js";
import { FakeClock, FakeEventSource, FakeWebSocket, fakeFetch, flush } from "./fakes.mjs";

const BIG = "1234567890.123456789012345678901234567890";
const HUGE = "9".repeat(400);
const TINY = `0.${"0".repeat(399)}1`; // numeric 1e-400 as Postgres writes it
const row = `{"id":1,"big":${BIG},"huge":${HUGE},"tiny":${TINY},"int8":9223372036854775807,"safe":9007199254740991,"price":12.50,"f":0.1,"neg":-3,"zero":0.000,"s":"${"1".repeat(20)}","nan":"NaN"}`;
const changeText = (ref, id = 1) =>
  `{"type":"change","ref":"${ref}","id":${id},"schema":"public","table":"books","op":"insert","pk":{"id":${id}},"row":${row.replace('"id":1', `"id":${id}`)},"old":null}`;

describe("what JavaScript numbers cannot hold", () => {
  test("regression: JSON.parse rounds numeric, overflows to Infinity and underflows to 0", () => {
    const parsed = parseJson(row); // the default: JSON.parse's numbers
    assert.equal(parsed.big, 1234567890.1234567);
    assert.equal(parsed.huge, Infinity);
    assert.equal(parsed.tiny, 0);
    assert.equal(parsed.int8, 9223372036854775807); // …808 in truth
  });

  test('numbers: "string" keeps every number a double cannot hold as its decimal text', () => {
    const parsed = parseJson(row, "string");
    assert.deepEqual(parsed, {
      id: 1,
      big: BIG,
      huge: HUGE,
      tiny: TINY,
      int8: "9223372036854775807",
      safe: 9007199254740991,
      price: 12.5,
      f: 0.1,
      neg: -3,
      zero: 0,
      s: "1".repeat(20), // strings are never touched
      nan: "NaN",
    });
  });

  test("which numbers are exact", () => {
    for (const text of ["0", "-0.0", "123456789012345", "0.1", "1.50", "9007199254740991", "-2.5e-300", "100000000000.000"]) {
      assert.ok(numberIsExact(text), text);
    }
    for (const text of ["12345678901234567", "1234567890123456.5", "9007199254740993", "0.1000000000000001", "1e400", "1e-400", "2e-310", BIG, HUGE, "1e21", "1e300"]) {
      assert.ok(!numberIsExact(text), text);
    }
  });

  test("digits inside strings and escaped quotes do not confuse the scan", () => {
    const text = `{"a":"x\\"${"9".repeat(30)}\\"","b":[${"9".repeat(30)},1.5]}`;
    assert.deepEqual(parseJson(text, "string"), { a: `x"${"9".repeat(30)}"`, b: ["9".repeat(30), 1.5] });
  });

  test("numbers with exponents are judged by value", () => {
    assert.deepEqual(parseJson('[1e21, 1e-5, 1.5e-10, 2.5E+2, 1e400]', "string"), ["1e21", 1e-5, 1.5e-10, 250, "1e400"]);
  });

  test("frames parse the same way; bad JSON is still null", () => {
    assert.equal(parseFrame(changeText("s1"), undefined, "string").row.big, BIG);
    assert.equal(parseFrame(`{"type":"x","n":${HUGE}`, undefined, "string"), null);
  });
});

describe('connect(url, {numbers: "string"})', () => {
  let clock;
  beforeEach(() => {
    clock = new FakeClock();
    FakeWebSocket.reset();
    FakeEventSource.reset();
  });

  const options = (extra) => ({
    WebSocket: FakeWebSocket,
    EventSource: FakeEventSource,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    watchBrowser: false,
    ...extra,
  });

  test("WebSocket changes keep exact numbers; the default stays JSON.parse", () => {
    for (const [numbers, expected] of [["string", BIG], [undefined, 1234567890.1234567]]) {
      const connection = connect("http://rowcast.test", options({ numbers }));
      const changes = [];
      connection.subscribe({ table: "books", onChange: (e) => changes.push(e) });
      const ws = FakeWebSocket.last;
      ws.serverOpen();
      ws.onmessage({ data: changeText("s1") });
      assert.equal(changes[0].row.big, expected);
      connection.close();
    }
  });

  test("SSE changes keep exact numbers", () => {
    const connection = connect("http://rowcast.test", options({ numbers: "string", transport: "sse" }));
    const changes = [];
    connection.subscribe({ table: "books", onChange: (e) => changes.push(e) });
    const es = FakeEventSource.instances.at(-1);
    es.serverOpen();
    for (const fn of es.listeners.get("change")) fn({ data: changeText("s1") });
    assert.equal(changes[0].row.huge, HUGE);
    connection.close();
  });

  test("an undecodable_change error reaches onError and the subscription goes on", () => {
    const errors = [];
    const connection = connect("http://rowcast.test", options({ numbers: "string" }));
    const changes = [];
    const sub = connection.subscribe({ table: "books", onChange: (e) => changes.push(e), onError: (f) => errors.push(f) });
    const ws = FakeWebSocket.last;
    ws.serverOpen();
    ws.onmessage({ data: '{"type":"subscribed","ref":"s1","cursor":"c1"}' });
    ws.onmessage({ data: '{"type":"error","ref":"s1","code":"undecodable_change","message":"m","id":4,"schema":"public","table":"books","op":"update"}' });
    ws.onmessage({ data: changeText("s1", 5) });
    assert.equal(errors[0]?.code, "undecodable_change");
    assert.equal(changes.at(-1).id, 5);
    assert.ok(!sub.failed);
    connection.close();
  });

  test("rejects an unknown numbers mode", () => {
    assert.throws(() => connect("http://rowcast.test", options({ numbers: "bigint" })), TypeError);
  });

  test("LiveCollection parses the snapshot like the changes", async () => {
    const connection = connect("http://rowcast.test", options({ numbers: "string" }));
    const api = fakeFetch(() => ({ text: `{"items":[${row}],"cursor":"c1"}` }));
    const books = new LiveCollection({ baseUrl: "http://rowcast.test", resource: "books", connection, fetch: api.fetch });
    await books.load();
    await flush();
    assert.equal(books.store.get({ id: 1 }).big, BIG);
    assert.equal(books.store.get({ id: 1 }).int8, "9223372036854775807");
    connection.close();
  });
});
