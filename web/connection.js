// A live connection to the notifier: one WebSocket carrying every subscription, or one
// EventSource per subscription when WebSockets cannot open. Sessions end; the connection
// reconnects with backoff and resumes each subscription from its last cursor.
// All environment pieces (WebSocket, EventSource, timers, clock, random) are injectable so the
// reconnect and fallback logic run under node --test with fakes.

import { Backoff } from "./backoff.js";
import { PresenceBook, presenceFrame } from "./presence.js";
import {
  chooseTransport,
  closeAction,
  isFatalSubscriptionError,
  NUMBER_MODES,
  parseFrame,
  SeenIds,
  sseUrl,
  statusAfterFailure,
  subscribeFrame,
  wsProtocols,
  wsUrl,
} from "./protocol.js";

const SSE_EVENTS = ["subscribed", "change", "checkpoint", "schema_changed", "resync_required", "error"];

/**
 * Open a connection. `url` is the server's base URL (default: the page's origin).
 * options: token, getToken (async () => token; called on 4001 and before retries that may be
 * auth failures), transport ("auto" | "websocket" | "sse"), onStatus(status, detail),
 * backoff {base, cap} in ms, offlineAfter and offlineDelay (failed attempts and ms without a
 * connection before the status reads "offline"; defaults 3 and 5000), openTimeout,
 * pingInterval, pongTimeout (ms), onError(frame) for errors not tied to a subscription,
 * watchBrowser (default true: reconnect at once when the browser comes back online or the tab
 * becomes visible), name (string or function: in open mode the display name others see on this
 * page's presence; token mode uses the token's subject), numbers ("number", the default, or
 * "string": numbers a JavaScript number cannot hold exactly arrive as their decimal text; see
 * web/protocol.js), and for tests:
 * WebSocket, EventSource, setTimeout, clearTimeout, now, random, autoStart.
 */
export function connect(url, options = {}) {
  return new Connection(url, options);
}

export class Connection {
  constructor(url, options = {}) {
    this.url = url ?? globalThis.location?.origin;
    if (!this.url) throw new TypeError("connect(url): a base URL is required outside a browser");
    this.token = options.token ?? null;
    this.getToken = options.getToken ?? null;
    this.preferred = options.transport ?? "auto";
    this.numbers = options.numbers ?? "number";
    if (!NUMBER_MODES.includes(this.numbers)) throw new TypeError(`numbers: one of ${NUMBER_MODES.join(", ")}`);
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.EventSource = options.EventSource ?? globalThis.EventSource;
    if (!this.WebSocket && !this.EventSource) throw new TypeError("neither WebSocket nor EventSource is available");
    this.setTimeout = options.setTimeout ?? globalThis.setTimeout.bind(globalThis);
    this.clearTimeout = options.clearTimeout ?? globalThis.clearTimeout.bind(globalThis);
    this.now = options.now ?? Date.now;
    this.backoff = new Backoff({ ...options.backoff, random: options.random ?? Math.random });
    this.offlineAfter = options.offlineAfter ?? 3;
    this.offlineDelay = options.offlineDelay ?? 5000;
    this.openTimeout = options.openTimeout ?? 10000;
    this.pingInterval = options.pingInterval ?? 25000;
    this.pongTimeout = options.pongTimeout ?? 10000;
    this.status = "connecting";
    this.detail = "";
    this.transport = null;
    this.subs = new Map(); // ref -> Subscription
    this.session = null;
    this.statusListeners = new Set();
    if (options.onStatus) this.statusListeners.add(options.onStatus);
    this.stats = { wsOpened: false, sseOpened: false, wsFailures: 0, sseFailures: 0 };
    this.everLive = false;
    this.failures = 0;
    this.downSince = this.now();
    this.lastImmediate = -Infinity;
    this.retryTimer = null;
    this.pendingRetry = () => {};
    this.closed = false;
    this.nextRef = 1;
    this.onError = options.onError ?? null;
    this.name = options.name ?? null; // string or () => string: the presence display name (open mode)
    this.unwatch = options.watchBrowser === false ? () => {} : watchBrowser(this);
    if (options.autoStart !== false) this.start();
  }

  /** Listen to status changes; returns a function that stops listening. */
  onStatus(listener) {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  /** Subscribe to a table: {table, schema?, where?, columns?, cursor?, mode?, onChange, onStatus?, onResync?, onSchema?, onError?, onPresence?}. */
  subscribe(spec) {
    if (!spec?.table) throw new TypeError("subscribe: table is required");
    const sub = new Subscription(this, spec, this.#newRef());
    this.subs.set(sub.ref, sub);
    this.session?.add(sub);
    return sub;
  }

  /** Start connecting (done by the constructor unless autoStart is false). */
  start() {
    if (this.session || this.retryTimer !== null || this.closed) return;
    if (!this.token && this.getToken) this.#refreshThenOpen();
    else this.#open();
  }

  /** Reconnect now if waiting for a retry (e.g. the browser came back online); else probe. */
  reconnectNow() {
    if (this.closed) return;
    if (this.retryTimer !== null) {
      this.clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.pendingRetry();
    } else {
      this.session?.probe();
    }
  }

  /** Close for good: no more reconnects. */
  close() {
    this.closed = true;
    this.unwatch();
    if (this.retryTimer !== null) this.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const session = this.session;
    this.session = null;
    session?.close();
    this.#setStatus("closed", "closed by the page");
  }

  // -- subscription bookkeeping (called by Subscription) --

  _unsubscribe(sub) {
    this.subs.delete(sub.ref);
    this.session?.remove(sub);
  }

  _announce(sub, pk, state) {
    if (!sub.acked) return; // sent with the others once the server acknowledges the subscription
    const name = typeof this.name === "function" ? this.name() : this.name;
    this.session?.send?.(presenceFrame(sub.ref, pk, state, name));
  }

  _resubscribe(sub, cursor) {
    if (this.subs.delete(sub.ref)) this.session?.remove(sub);
    sub.ref = this.#newRef();
    sub.cursor = cursor ?? null;
    sub.acked = false;
    sub.failed = false;
    this.subs.set(sub.ref, sub);
    this.session?.add(sub);
  }

  // -- session callbacks --

  _opened(session) {
    if (session !== this.session) return;
    if (session.kind === "websocket") this.stats.wsOpened = true;
    else this.stats.sseOpened = true;
    this.everLive = true;
    this.failures = 0;
    this.downSince = null;
    this.#setStatus("live", session.kind);
  }

  _frame(session, frame, streamSub) {
    if (session !== this.session || !frame) return;
    // The server answered: it accepts us, so failures so far do not count against the next one.
    this.backoff.reset();
    const sub = streamSub ?? (frame.ref !== undefined ? this.subs.get(frame.ref) : undefined);
    switch (frame.type) {
      case "subscribed":
        if (!sub) return;
        if (frame.cursor) sub.cursor = frame.cursor;
        sub.acked = true;
        sub._status("live");
        sub._presenceRestart(); // the server's presence snapshot follows; ours is announced again
        return;
      case "change":
        if (!sub || sub.failed) return;
        if (frame.id !== undefined && !sub.seen.add(frame.id)) return; // a replayed duplicate
        sub.presenceBook.follow(frame); // a re-keyed row: the server moved our presence on it
        sub._change(frame);
        return;
      case "checkpoint":
        if (!frame.cursor) return;
        // A checkpoint covers every subscription the server has acknowledged on this stream.
        if (streamSub) {
          if (streamSub.acked) streamSub.cursor = frame.cursor;
        } else {
          for (const each of this.subs.values()) if (each.acked) each.cursor = frame.cursor;
        }
        return;
      case "schema_changed":
        // DDL on the table (PROTOCOL.md "Schema changes"); a renamed table's subscription follows it.
        if (sub && !sub.failed) sub.onSchema?.(frame);
        return;
      case "presence":
        if (sub && !sub.failed) sub._presence(frame);
        return;
      case "resync_required":
        if (!sub) return;
        sub._resync(frame);
        return;
      case "error":
        if (sub) sub._error(frame);
        else this.onError?.(frame);
        return;
      default:
        return; // pong and frames of later protocol versions
    }
  }

  _ended(session, { code, reason, opened }) {
    if (session !== this.session) return;
    this.session = null;
    for (const sub of this.subs.values()) {
      sub.acked = false;
      sub._presenceLost(); // who else is there is unknown until the next socket says
    }
    if (this.closed) return;
    if (!opened) {
      if (session.kind === "websocket") this.stats.wsFailures += 1;
      else this.stats.sseFailures += 1;
    }
    const action = closeAction(code, {
      transport: session.kind,
      opened,
      canRefresh: Boolean(this.getToken),
      msSinceImmediate: this.now() - this.lastImmediate,
    });
    if (!action.reconnect) {
      this.#setStatus("offline", action.reason);
      return;
    }
    // Falling back to SSE for the first time is a different route, not a retry: go at once.
    const fallback = session.kind === "websocket" && this.#nextTransport() === "sse" && this.stats.sseFailures === 0;
    this.#retry({ opened, reason: reason || action.reason, now: action.delay === "now" || fallback, refreshToken: action.refreshToken });
  }

  // -- internals --

  #newRef() {
    return `s${this.nextRef++}`;
  }

  #nextTransport() {
    return chooseTransport({
      preferred: this.preferred,
      hasWebSocket: Boolean(this.WebSocket),
      hasEventSource: Boolean(this.EventSource),
      ...this.stats,
    });
  }

  #open() {
    if (this.closed || this.session) return;
    const kind = this.#nextTransport();
    this.transport = kind;
    this.session = kind === "websocket" ? new WebSocketSession(this) : new SseSession(this);
    this.session.start();
  }

  #refreshThenOpen() {
    // A pending refresh holds the session slot, so start() and reconnectNow() do not race it.
    const pending = { kind: "token", add() {}, remove() {}, probe() {}, close() {} };
    this.session = pending;
    Promise.resolve()
      .then(() => this.getToken())
      .then(
        (token) => {
          if (this.session !== pending) return;
          this.token = token;
          this.session = null;
          this.#open();
        },
        (error) => {
          if (this.session !== pending) return;
          this.session = null;
          const reason = `token refresh failed: ${error?.message ?? error}`;
          this.#retry({ opened: false, reason, now: false, refreshToken: true });
        },
      );
  }

  /** Count a failed session, show the status it implies, and schedule the next attempt. */
  #retry({ opened, reason, now, refreshToken }) {
    this.failures = opened ? 1 : this.failures + 1;
    this.downSince ??= this.now();
    const status = statusAfterFailure({
      failures: this.failures,
      everLive: this.everLive,
      offlineAfter: this.offlineAfter,
      downForMs: this.now() - this.downSince,
      offlineDelay: this.offlineDelay,
    });
    this.#setStatus(status, reason);
    if (now) this.lastImmediate = this.now();
    const delay = now ? 0 : this.backoff.next();
    this.pendingRetry = () => (refreshToken ? this.#refreshThenOpen() : this.#open());
    this.retryTimer = this.setTimeout(() => {
      this.retryTimer = null;
      this.pendingRetry();
    }, delay);
  }

  #setStatus(status, detail = "") {
    const changed = status !== this.status;
    this.status = status;
    this.detail = detail;
    if (!changed) return;
    for (const listener of this.statusListeners) listener(status, detail);
    for (const sub of this.subs.values()) {
      // A subscription is live once the server acknowledged it, not when the socket opened.
      if (status !== "live") sub._status(status);
    }
  }

}

/** One subscription; survives reconnects, resuming from its latest cursor. */
class Subscription {
  constructor(connection, spec, ref) {
    this.connection = connection;
    this.ref = ref;
    this.spec = { table: spec.table, where: spec.where, columns: spec.columns, mode: spec.mode };
    this.cursor = spec.cursor ?? null;
    this.onChange = spec.onChange ?? (() => {});
    this.onStatus = spec.onStatus ?? null;
    this.onResync = spec.onResync ?? null;
    this.onSchema = spec.onSchema ?? null;
    this.onError = spec.onError ?? null;
    this.onPresence = spec.onPresence ?? null;
    this.presenceBook = new PresenceBook();
    this.seen = new SeenIds();
    this.acked = false;
    this.failed = false;
    this.status = "connecting";
    this.active = true;
  }

  /** Stop receiving changes (the server withdraws this socket's presence when it closes). */
  unsubscribe() {
    if (!this.active) return;
    for (const { pk } of this.presenceBook.announced()) this.announce(pk, null);
    this.active = false;
    this.connection._unsubscribe(this);
    this.presenceBook.clear();
  }

  /**
   * Tell others this page is "viewing" or "editing" the row `pk` (an object of key columns), or
   * null: no longer. Kept and announced again after every reconnect. WebSocket only.
   */
  announce(pk, state) {
    const now = this.presenceBook.resolve(pk); // a row re-keyed since: its key now
    if (this.presenceBook.announce(now, state ?? null)) this.connection._announce(this, now, state ?? null);
  }

  /** Who else is viewing or editing rows of this subscription: [{pk, who, session, state, since}]. */
  presence(pk) {
    return pk === undefined ? this.presenceBook.list() : this.presenceBook.on(pk);
  }

  _presence(frame) {
    if (this.presenceBook.apply(frame)) this.onPresence?.(this.presenceBook.list(), frame);
  }

  _presenceRestart() {
    this._presenceLost();
    for (const { pk, state } of this.presenceBook.announced()) this.connection._announce(this, pk, state);
  }

  _presenceLost() {
    if (this.presenceBook.clear()) this.onPresence?.([], null);
  }

  /** Subscribe again from `cursor` (after reloading a snapshot); a fresh ref on the wire. */
  resubscribe(cursor) {
    this.active = true;
    this.connection._resubscribe(this, cursor);
  }

  _change(event) {
    this.onChange(event);
  }

  _status(status) {
    if (status === this.status) return;
    this.status = status;
    this.onStatus?.(status);
  }

  _resync(frame) {
    // The server dropped this subscription; its cursor is useless now.
    this.cursor = null;
    this.acked = false;
    this.seen = new SeenIds();
    if (this.onResync) {
      this.connection.subs.delete(this.ref);
      this.connection.session?.remove(this, { silent: true });
      this.onResync(frame);
    } else {
      // Nobody holds a snapshot to reload: carry on live from now.
      this.resubscribe(null);
    }
  }

  _error(frame) {
    this.onError?.(frame);
    if (frame.about === "presence") return; // an announcement was refused; the subscription goes on
    const code = frame.error ?? frame.code; // `code`: servers before the one error shape
    if (code === "bad_cursor") {
      this._resync({ type: "resync_required", ref: frame.ref, reason: "bad_cursor" });
    } else if (!this.acked && isFatalSubscriptionError(code)) {
      this.failed = true;
      this.active = false;
      this.connection._unsubscribe(this);
      this._status("failed");
    }
  }
}

/** One WebSocket carrying every subscription. */
class WebSocketSession {
  constructor(connection) {
    this.connection = connection;
    this.kind = "websocket";
    this.ws = null;
    this.opened = false;
    this.ended = false;
    this.timer = null;
    this.awaitingPong = false;
  }

  start() {
    const c = this.connection;
    try {
      this.ws = new c.WebSocket(wsUrl(c.url), wsProtocols(c.token));
    } catch (error) {
      // E.g. a Content-Security-Policy without ws: refuses the constructor outright.
      c.setTimeout(() => this.#end(1006, `WebSocket refused: ${error?.message ?? error}`), 0);
      return;
    }
    this.ws.onopen = () => this.#onOpen();
    this.ws.onmessage = (event) => this.#onMessage(event);
    this.ws.onclose = (event) => this.#end(event.code, event.reason);
    this.ws.onerror = () => {}; // a close event always follows
    this.#arm(c.openTimeout, () => this.#fail("could not open in time"));
  }

  add(sub) {
    if (this.opened) this.#send(subscribeFrame(sub.ref, sub.spec, sub.cursor));
  }

  remove(sub, { silent = false } = {}) {
    if (this.opened && !silent) this.#send({ type: "unsubscribe", ref: sub.ref });
  }

  send(frame) {
    if (this.opened) this.#send(frame);
  }

  /** Send a ping now; no answer within pongTimeout ends the session. */
  probe() {
    if (!this.opened || this.awaitingPong) return;
    this.awaitingPong = true;
    this.#send({ type: "ping" });
    this.#arm(this.connection.pongTimeout, () => this.#fail("no answer to ping"));
  }

  close() {
    this.ended = true;
    this.#disarm();
    if (this.ws) {
      this.ws.onopen = this.ws.onmessage = this.ws.onclose = this.ws.onerror = null;
      try {
        this.ws.close(1000);
      } catch {
        // already closing
      }
    }
  }

  #onOpen() {
    this.opened = true;
    const c = this.connection;
    c._opened(this);
    for (const sub of c.subs.values()) this.add(sub);
    this.#idle();
  }

  #onMessage(event) {
    if (typeof event.data !== "string") return;
    this.awaitingPong = false;
    this.#idle();
    this.connection._frame(this, parseFrame(event.data, undefined, this.connection.numbers));
  }

  #idle() {
    // Any frame proves the socket alive; after pingInterval of silence, ask.
    this.#arm(this.connection.pingInterval, () => this.probe());
  }

  #fail(reason) {
    this.#end(1006, reason);
  }

  #end(code, reason) {
    if (this.ended) return;
    const opened = this.opened;
    this.close();
    this.connection._ended(this, { code, reason, opened });
  }

  #send(frame) {
    try {
      this.ws.send(JSON.stringify(frame));
    } catch {
      // the close event follows and reconnects
    }
  }

  #arm(ms, fn) {
    this.#disarm();
    this.timer = this.connection.setTimeout(() => {
      this.timer = null;
      if (!this.ended) fn();
    }, ms);
  }

  #disarm() {
    if (this.timer !== null) this.connection.clearTimeout(this.timer);
    this.timer = null;
  }
}

/** One EventSource per subscription; any stream failing ends the whole session. */
class SseSession {
  constructor(connection) {
    this.connection = connection;
    this.kind = "sse";
    this.streams = new Map(); // Subscription -> {es, open}
    this.opened = false;
    this.ended = false;
  }

  start() {
    for (const sub of this.connection.subs.values()) this.add(sub);
    this.#checkOpen();
  }

  add(sub) {
    if (this.ended) return;
    const c = this.connection;
    let es;
    try {
      es = new c.EventSource(sseUrl(c.url, sub.spec, sub.cursor, c.token));
    } catch (error) {
      c.setTimeout(() => this.#end(1006, `EventSource refused: ${error?.message ?? error}`), 0);
      return;
    }
    const stream = { es, open: false };
    this.streams.set(sub, stream);
    es.onopen = () => {
      stream.open = true;
      this.#checkOpen();
    };
    // The server ends a stream with `event: close` ({code, reason}), the close codes of /ws.
    es.addEventListener("close", (event) => {
      const frame = parseFrame(event.data, "close");
      this.#end(Number(frame?.code) || 1006, frame?.reason ?? "stream closed by the server");
    });
    for (const type of SSE_EVENTS) {
      es.addEventListener(type, (event) => {
        // EventSource reports its own failures as "error" events without data.
        if (type === "error" && typeof event.data !== "string") {
          this.#end(1006, "event stream failed");
          return;
        }
        c._frame(this, parseFrame(event.data, type, c.numbers), sub);
      });
    }
  }

  remove(sub) {
    const stream = this.streams.get(sub);
    if (!stream) return;
    this.streams.delete(sub);
    stream.es.close();
    this.#checkOpen();
  }

  probe() {
    // EventSource has no ping; the server's keep-alive comments keep proxies from idling it out.
  }

  close() {
    this.ended = true;
    for (const { es } of this.streams.values()) es.close();
    this.streams.clear();
  }

  #checkOpen() {
    // Without streams there is nothing to be live about: SSE has no connection of its own.
    if (this.opened || this.ended || this.streams.size === 0) return;
    for (const stream of this.streams.values()) if (!stream.open) return;
    this.opened = true;
    this.connection._opened(this);
  }

  #end(code, reason) {
    if (this.ended) return;
    const opened = this.opened;
    this.close();
    this.connection._ended(this, { code, reason, opened });
  }
}

/** Reconnect at once when the browser comes back online or the tab becomes visible again. */
function watchBrowser(connection) {
  const doc = globalThis.document;
  if (!doc || typeof globalThis.addEventListener !== "function") return () => {};
  const onOnline = () => connection.reconnectNow();
  const onVisible = () => {
    if (doc.visibilityState === "visible") connection.reconnectNow();
  };
  globalThis.addEventListener("online", onOnline);
  doc.addEventListener("visibilitychange", onVisible);
  return () => {
    globalThis.removeEventListener("online", onOnline);
    doc.removeEventListener("visibilitychange", onVisible);
  };
}
