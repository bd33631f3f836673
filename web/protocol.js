// The rowcast wire protocol (docs/PROTOCOL.md) as pure functions: URLs, frames, row keys and the
// decisions a client takes when a socket closes. No I/O here, so node --test covers all of it.

export const SUBPROTOCOL = "rowcast.v1";

export const CLOSE = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  ABNORMAL: 1006,
  TOO_BIG: 1009,
  UNAUTHORIZED: 4001,
  SLOW_CONSUMER: 4008,
  TOO_MANY: 4029,
});

// Error codes that end a subscription for good: resubscribing with the same spec fails again.
const FATAL_SUBSCRIPTION_ERRORS = new Set([
  "unknown_table",
  "unknown_column",
  "unknown_operator",
  "bad_value",
  "bad_frame",
  "forbidden",
  "too_many_subscriptions",
]);

/** JSON with object keys sorted at every level, so equal keys always give equal strings. */
export function canonicalJson(value) {
  if (value === null || typeof value !== "object") return JSON.stringify(value ?? null);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const keys = Object.keys(value)
    .filter((k) => value[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(",")}}`;
}

/**
 * The parts of a dotted name read as Postgres reads it: unquoted parts fold to lower case and end
 * at a dot; "double quoted" parts are exact ("" is a quote). Throws on a malformed name.
 */
export function splitName(text) {
  const parts = [];
  let i = 0;
  for (;;) {
    let part;
    if (text[i] === '"') {
      part = "";
      let j = i + 1;
      for (;;) {
        const k = text.indexOf('"', j);
        if (k < 0) throw new TypeError(`unterminated quoted identifier in ${text}`);
        part += text.slice(j, k);
        if (text[k + 1] === '"') {
          part += '"';
          j = k + 2;
          continue;
        }
        i = k + 1;
        break;
      }
    } else {
      let k = text.indexOf(".", i);
      if (k < 0) k = text.length;
      part = text.slice(i, k).toLowerCase();
      if (part.includes('"')) throw new TypeError(`a quote inside an unquoted identifier in ${text}`);
      i = k;
    }
    if (!part) throw new TypeError(`empty identifier in ${text}`);
    parts.push(part);
    if (i === text.length) return parts;
    if (text[i] !== ".") throw new TypeError(`unexpected ${text[i]} after a quoted identifier in ${text}`);
    i += 1;
  }
}

const PLAIN = /^[a-z_][a-z0-9_$]*$/;
const ident = (part) => (PLAIN.test(part) ? part : `"${part.replaceAll('"', '""')}"`);

/** The one string key of a table (same as the server's): public.books, co."x.y", "co.x".y. */
export function canonicalTable(schema, table) {
  return `${ident(schema)}.${ident(table)}`;
}

/** A table name as written ('books', 'audit.log', 'co."x.y"') -> its canonical key. */
export function qualify(table) {
  const parts = splitName(table);
  if (parts.length === 1) return canonicalTable("public", parts[0]);
  if (parts.length === 2) return canonicalTable(parts[0], parts[1]);
  throw new TypeError(`ambiguous table name ${table}: write schema.table, quoting a part with a dot`);
}

/** The canonical table a change event belongs to (events carry schema and table as two fields). */
export function eventTable(event) {
  return canonicalTable(event.schema ?? "public", event.table);
}

/** Client rule 1: a row's identity is its table plus the canonical JSON of its primary key. */
export function rowKey(table, pk) {
  return `${qualify(table)} ${canonicalJson(pk)}`;
}

/** The primary-key object of `row` for the given key columns. */
export function pkOf(row, pkColumns) {
  const pk = {};
  for (const column of pkColumns) pk[column] = row[column];
  return pk;
}

function withSlash(base) {
  const url = new URL(base);
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  url.search = "";
  url.hash = "";
  return url;
}

/** ws(s)://…/ws for an http(s):// or ws(s):// base URL. The token never goes in this URL. */
export function wsUrl(base) {
  const url = new URL("ws", withSlash(base));
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  return url.href;
}

/** Browsers cannot set headers on a WebSocket, so the token travels as a subprotocol. */
export function wsProtocols(token) {
  return token ? [SUBPROTOCOL, `bearer.${token}`] : [SUBPROTOCOL];
}

/** /sse?table=…&where=…&columns=…&mode=…&cursor=…&token=… (EventSource cannot send headers). */
export function sseUrl(base, { table, where, columns, mode }, cursor, token) {
  const url = new URL("sse", withSlash(base));
  url.searchParams.set("table", table);
  if (where && Object.keys(where).length) url.searchParams.set("where", JSON.stringify(where));
  if (columns && columns.length) url.searchParams.set("columns", columns.join(","));
  if (mode) url.searchParams.set("mode", mode);
  if (cursor) url.searchParams.set("cursor", cursor);
  if (token) url.searchParams.set("token", token);
  return url.href;
}

/** /api/<resource>[/<id>][?query]; `id` may be a scalar or a one-column pk object. */
export function apiUrl(base, resource, id, query) {
  let path = `api/${encodeURIComponent(resource)}`;
  if (id !== undefined && id !== null) path += `/${encodeURIComponent(String(id))}`;
  const url = new URL(path, withSlash(base));
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null) url.searchParams.set(name, String(value));
  }
  return url.href;
}

/** The `subscribe` frame for a subscription spec, resuming from `cursor` when there is one. */
export function subscribeFrame(ref, { schema, table, where, columns, mode }, cursor) {
  const frame = { type: "subscribe", ref, table };
  if (schema) frame.schema = schema;
  if (where && Object.keys(where).length) frame.where = where;
  if (columns && columns.length) frame.columns = [...columns];
  if (mode) frame.mode = mode;
  if (cursor) frame.cursor = cursor;
  return frame;
}

// Numbers. rowcast sends numbers exactly as Postgres wrote them (docs/PROTOCOL.md "Numbers"),
// but a JavaScript number is an IEEE double: integers are exact only up to
// Number.MAX_SAFE_INTEGER (2^53 - 1; int8 goes to 9223372036854775807), only 15 significant
// digits survive decimal -> double -> decimal, and the range ends near 1.8e308 and 2.2e-308
// (numeric holds 131072 digits before the point and 16383 after). So JSON.parse silently turns
// numeric 1234567890.123456789012345678901234567890 into 1234567890.1234567, a 400-digit numeric
// into Infinity and 1e-400 into 0. With numbers: "string" (connect(url, {numbers: "string"}),
// LiveCollection too) every number a double cannot hold exactly arrives as its decimal text, a
// string, and all others stay numbers. (JSON.parse's reviver `context.source` would do the same
// where engines ship it; this works everywhere, and costs nothing for frames without long numbers.)
export const NUMBER_MODES = Object.freeze(["number", "string"]);
const MIN_NORMAL = 2.2250738585072014e-308;
// Cheap first look: a run of 16 digits (and points), or a 2-digit exponent (1e16 is already an
// unsafe integer). Misses nothing; Postgres writes jsonb numbers without exponents anyway.
const MAYBE_INEXACT = /\d[\d.]{15}|[eE][+-]?\d{2}/;
// Strings first, so digits inside them are skipped; then JSON numbers.
const TOKENS = /"[^"\\]*(?:\\.[^"\\]*)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;
const NUMBER = /^-?(\d+)(?:\.(\d+))?(?:[eE][+-]?\d+)?$/;

/** True when the JSON number `text` survives as a JavaScript number (see the comment above). */
export function numberIsExact(text) {
  const match = NUMBER.exec(text);
  if (!match) return false;
  const value = Number(text);
  const digits = (match[1] + (match[2] ?? "")).replace(/^0+/, "").replace(/0+$/, "");
  if (digits === "") return true; // zero
  if (!Number.isFinite(value) || Math.abs(value) < MIN_NORMAL) return false; // overflow, underflow
  if (Number.isInteger(value) && !Number.isSafeInteger(value)) return false;
  const whole = !/[eE]/.test(text) && /^0*$/.test(match[2] ?? "");
  return whole || digits.length <= 15; // a safe integer is exact whatever its digits
}

/** JSON.parse, or with numbers = "string" the numbers a double cannot hold as decimal strings. */
export function parseJson(text, numbers = "number") {
  if (numbers !== "string" || !MAYBE_INEXACT.test(text)) return JSON.parse(text);
  return JSON.parse(text.replace(TOKENS, (token) => (token[0] === '"' || numberIsExact(token) ? token : `"${token}"`)));
}

/** A server frame from its text, or null when it is not a JSON object with a string `type`. */
export function parseFrame(text, fallbackType, numbers = "number") {
  let frame;
  try {
    frame = parseJson(text, numbers);
  } catch {
    return null;
  }
  if (frame === null || typeof frame !== "object" || Array.isArray(frame)) return null;
  if (typeof frame.type !== "string") {
    // SSE names the frame in its `event:` field; the data may leave `type` out.
    if (!fallbackType) return null;
    frame.type = fallbackType;
  }
  return frame;
}

/** True when an `error` frame ends its subscription (resending the same subscribe cannot help). */
export function isFatalSubscriptionError(code) {
  return FATAL_SUBSCRIPTION_ERRORS.has(code);
}

/**
 * What to do after a session ends with close `code`.
 *
 * ctx: transport ("websocket" | "sse"), opened (did the session open), canRefresh (a getToken
 * was given), msSinceImmediate (time since the last immediate reconnect; guards hot loops).
 * Returns {reconnect, delay: "now" | "backoff", refreshToken, reason}.
 */
export function closeAction(code, { transport = "websocket", opened = false, canRefresh = false, msSinceImmediate = Infinity } = {}) {
  // An immediate reconnect that ends the same way within a second falls back to backoff.
  const quick = msSinceImmediate > 1000 ? "now" : "backoff";
  if (code === CLOSE.UNAUTHORIZED) {
    if (!canRefresh) return { reconnect: false, delay: "backoff", refreshToken: false, reason: "unauthorized" };
    return { reconnect: true, delay: quick, refreshToken: true, reason: "token expired" };
  }
  if (code === CLOSE.SLOW_CONSUMER) {
    return { reconnect: true, delay: quick, refreshToken: false, reason: "slow consumer" };
  }
  // EventSource hides the HTTP status, and a refused WebSocket upgrade hides it too: an expired
  // token looks like any other failure there, so refresh whenever a refresh is possible.
  const refreshToken = canRefresh && (transport === "sse" || !opened);
  const reason = code === CLOSE.GOING_AWAY ? "server going away" : opened ? "connection lost" : "could not connect";
  return { reconnect: true, delay: "backoff", refreshToken, reason };
}

/**
 * Which transport the next session uses. WebSocket first; SSE once the WebSocket failed to open
 * (a proxy that blocks upgrades) unless a WebSocket has opened before in this connection. While
 * nothing opens at all (server down), attempts alternate, and the first that opens sticks.
 */
export function chooseTransport({
  preferred = "auto",
  hasWebSocket = true,
  hasEventSource = true,
  wsOpened = false,
  sseOpened = false,
  wsFailures = 0,
  sseFailures = 0,
} = {}) {
  if (preferred === "websocket" || !hasEventSource) return "websocket";
  if (preferred === "sse" || !hasWebSocket) return "sse";
  if (wsOpened) return "websocket";
  if (sseOpened) return "sse";
  if (wsFailures === 0) return "websocket";
  return sseFailures < wsFailures ? "sse" : "websocket";
}

/**
 * The status a connection shows after `failures` consecutive failed sessions, `downForMs` after
 * it was last live (or first tried). Offline takes both: a quick server restart whose retries
 * fail fast reads "reconnecting", not "offline".
 */
export function statusAfterFailure({ failures, everLive, offlineAfter, downForMs = Infinity, offlineDelay = 0 }) {
  if (failures >= offlineAfter && downForMs >= offlineDelay) return "offline";
  return everLive ? "reconnecting" : "connecting";
}

/** A bounded set of recently seen change ids: replays deliver at-least-once. */
export class SeenIds {
  constructor(capacity = 10000) {
    this.capacity = capacity;
    this.set = new Set();
  }

  /** True the first time `id` is seen, false for a duplicate. */
  add(id) {
    if (this.set.has(id)) return false;
    this.set.add(id);
    if (this.set.size > this.capacity) {
      // Sets iterate in insertion order: the first value is the oldest.
      this.set.delete(this.set.values().next().value);
    }
    return true;
  }

  has(id) {
    return this.set.has(id);
  }
}
