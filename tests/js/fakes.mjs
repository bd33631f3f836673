// Test doubles for the environment rowcast.js runs in: a manual clock, WebSocket, EventSource
// and fetch. Not a test file itself (node --test only runs *.test.mjs).

/** setTimeout/clearTimeout on a clock that moves only when the test says so. */
export class FakeClock {
  constructor() {
    this.time = 0;
    this.timers = new Map();
    this.nextId = 1;
    this.setTimeout = (fn, ms = 0) => {
      const id = this.nextId++;
      this.timers.set(id, { fn, at: this.time + ms, ms });
      return id;
    };
    this.clearTimeout = (id) => this.timers.delete(id);
    this.now = () => this.time;
  }

  /** Delays of the timers now pending, in the order they were set. */
  pending() {
    return [...this.timers.values()].map((t) => t.ms);
  }

  /** Move time forward, firing due timers in order (including ones they set). */
  advance(ms) {
    const until = this.time + ms;
    for (;;) {
      let next = null;
      for (const [id, t] of this.timers) if (t.at <= until && (!next || t.at < next[1].at)) next = [id, t];
      if (!next) break;
      this.timers.delete(next[0]);
      this.time = next[1].at;
      next[1].fn();
    }
    this.time = until;
  }
}

/** A WebSocket whose server side the test plays. */
export class FakeWebSocket {
  static instances = [];

  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.sent = [];
    this.readyState = 0;
    this.closedWith = null;
    FakeWebSocket.instances.push(this);
  }

  static reset() {
    FakeWebSocket.instances = [];
  }

  static get last() {
    return FakeWebSocket.instances.at(-1);
  }

  send(data) {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(JSON.parse(data));
  }

  close(code = 1000) {
    this.closedWith = code;
    this.readyState = 3;
  }

  /** Frames the client sent, of one type. */
  frames(type) {
    return this.sent.filter((f) => f.type === type);
  }

  serverOpen() {
    this.readyState = 1;
    this.onopen?.({});
  }

  serverSend(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  serverClose(code, reason = "") {
    this.readyState = 3;
    this.onerror?.({});
    this.onclose?.({ code, reason });
  }
}

/** An EventSource the test drives. */
export class FakeEventSource {
  static instances = [];

  constructor(url) {
    this.url = url;
    this.listeners = new Map();
    this.closed = false;
    FakeEventSource.instances.push(this);
  }

  static reset() {
    FakeEventSource.instances = [];
  }

  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(fn);
  }

  close() {
    this.closed = true;
  }

  get params() {
    return new URL(this.url).searchParams;
  }

  serverOpen() {
    this.onopen?.({});
  }

  /** A server event: `event: type`, `data: JSON`. */
  emit(type, data) {
    for (const fn of this.listeners.get(type) ?? []) fn({ data: JSON.stringify(data) });
  }

  /** The connection failed (EventSource's own error event carries no data). */
  fail() {
    for (const fn of this.listeners.get("error") ?? []) fn({});
  }
}

/** fetch that answers from a handler(method, url, init) -> {status, body}; records calls. */
export function fakeFetch(handler) {
  const calls = [];
  const fetch = async (url, init = {}) => {
    const call = { url: new URL(url), method: init.method ?? "GET", headers: init.headers ?? {}, body: init.body ? JSON.parse(init.body) : undefined };
    calls.push(call);
    // `text`: the response body as it is, for what JSON.stringify cannot write (long numbers).
    const { status = 200, body = null, text = null } = (await handler(call)) ?? {};
    return {
      status,
      ok: status >= 200 && status < 300,
      text: async () => text ?? (body === null ? "" : JSON.stringify(body)),
    };
  };
  return { fetch, calls };
}

/** Let pending promise callbacks run. */
export async function flush() {
  for (let i = 0; i < 5; i++) await Promise.resolve();
  await new Promise((resolve) => setImmediate(resolve));
}
