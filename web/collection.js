// LiveCollection: a REST snapshot kept current by change events, plus the REST writes
// (If-Match, X-Request-ID) whose echoes it recognises as its own.

import { apiUrl, parseJson } from "./protocol.js";
import { ApiError, ConflictError } from "./errors.js";
import { saveFields } from "./merge.js";
import { RowStore } from "./rowstore.js";

export { ApiError, ConflictError };

/** A fresh request id; crypto.randomUUID exists only in secure contexts, getRandomValues everywhere. */
export function newRequestId() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** If-Match for a version: quoted like the ETag the API sends; `*` forces. */
export function ifMatch(version) {
  if (version === "*") return "*";
  if (version === undefined || version === null) throw new TypeError("a version (or '*') is required for If-Match");
  return `"${version}"`;
}

/**
 * new LiveCollection({baseUrl, resource, table?, pk?, connection?, onChange?, onReset?, onStatus?,
 *   onError?, query?, limit?, maxRows?, where?, columns?, actor?, token?, getToken?, fetch?,
 *   versionColumn?, numbers?, onPresence?})
 *
 * onChange(change) gets {kind: "insert" | "update" | "delete" | "truncate", key, row, prev,
 * changed, oldKey?, removed?, event?, mine, source: "live" | "rest"}; onReset(rows) after each
 * snapshot load. Without a connection (or while it is offline) it is a plain REST collection.
 * Presence: announce(pk, "viewing" | "editing" | null) tells others what this page does with a
 * row; onPresence(list, frame) hears who else is there ([{pk, who, session, state, since}]), and
 * presence(pk) lists them for one row.
 */
export class LiveCollection {
  constructor(options) {
    const { resource } = options;
    if (!resource) throw new TypeError("LiveCollection: resource is required");
    this.baseUrl = options.baseUrl ?? globalThis.location?.origin;
    this.resource = resource;
    this.table = options.table ?? resource;
    this.pk = options.pk ?? ["id"];
    this.connection = options.connection ?? null;
    this.onChange = options.onChange ?? (() => {});
    this.onReset = options.onReset ?? (() => {});
    this.onStatus = options.onStatus ?? null;
    this.onError = options.onError ?? null;
    this.onPresence = options.onPresence ?? null;
    this.announcing = new Map(); // announcements made before the subscription exists
    this.query = options.query ?? {};
    this.limit = options.limit ?? 500; // page size of the snapshot load
    this.maxRows = options.maxRows ?? 10000;
    this.where = options.where;
    this.columns = options.columns;
    this.actor = options.actor ?? null; // string or () => string: sent as X-Actor
    this.token = options.token ?? null;
    this.getToken = options.getToken ?? null;
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    // Parse the snapshot like the live changes, or a row's numbers change type on its first update.
    this.numbers = options.numbers ?? this.connection?.numbers ?? "number";
    this.store = new RowStore({ table: this.table, pk: this.pk, versionColumn: options.versionColumn ?? "version" });
    this.total = 0;
    this.cursor = null;
    this.subscription = null;
    this.ownRequests = new Set(); // X-Request-IDs of our writes, bounded
    this.loading = null;
  }

  /** The current rows. */
  get rows() {
    return this.store.rows();
  }

  /** The row with this primary key (object or single value), or undefined. */
  get(pk) {
    return this.store.get(pk);
  }

  /**
   * Load the snapshot (rows + cursor) and subscribe from its cursor. Called again it reloads;
   * concurrent calls share one load.
   */
  load() {
    if (!this.loading) {
      this.loading = this.#load().finally(() => {
        this.loading = null;
      });
    }
    return this.loading;
  }

  /** Announce "viewing" or "editing" on the row `pk` (object or single value), or null: no longer. */
  announce(pk, state) {
    const key = this.#pkObject(pk);
    if (this.subscription) this.subscription.announce(key, state ?? null);
    else this.announcing.set(JSON.stringify(key), { key, state: state ?? null });
  }

  /** Who else is viewing or editing: every row, or the row `pk`. */
  presence(pk) {
    if (!this.subscription) return [];
    return this.subscription.presence(pk === undefined ? undefined : this.#pkObject(pk));
  }

  /** Stop listening. */
  close() {
    this.subscription?.unsubscribe();
    this.subscription = null;
  }

  /** True when this change event is the echo of one of this collection's own writes. */
  isMine(event) {
    const id = event?.actor?.request_id;
    return Boolean(id) && this.ownRequests.has(id);
  }

  /** POST a new row; resolves to the created row. */
  async create(values) {
    const row = await this.#request("POST", undefined, values, undefined);
    this.#applyRest(this.store.applyRow(row));
    return row;
  }

  /**
   * PATCH a row. `version` defaults to the version this collection holds; `force: true` sends
   * If-Match: *. Rejects with ConflictError (412, with `current`) when the row moved on.
   */
  async update(pk, changes, { version, force = false } = {}) {
    const v = force ? "*" : (version ?? this.#versionOf(pk));
    const row = await this.#request("PATCH", this.#idOf(pk), changes, v);
    this.#applyRest(this.store.applyRow(row));
    return row;
  }

  /**
   * Save only the fields a person edited, merging with concurrent writes (web/merge.js):
   * `base` is the row the edit started from, `mine` the edited fields only. A 412 whose change
   * touched other fields is merged and retried (at most `retries` times); a field both sides
   * changed rejects with MergeConflictError ({conflicts, current}) and writes nothing.
   * Resolves to {row, merged, attempts}.
   */
  saveFields(pk, { base, mine, version, retries } = {}) {
    const id = this.#idOf(pk);
    return saveFields((fields, at) => this.update(id, fields, { version: at }), {
      base: base ?? this.store.get(pk),
      mine,
      version: version ?? base?.version ?? this.#versionOf(pk),
      retries,
    });
  }

  /** DELETE a row, with the same If-Match rules as update. */
  async remove(pk, { version, force = false } = {}) {
    const v = force ? "*" : (version ?? this.#versionOf(pk));
    await this.#request("DELETE", this.#idOf(pk), undefined, v);
    this.#applyRest(this.store.applyRemoval(typeof pk === "object" ? pk : { [this.pk[0]]: pk }));
  }

  // -- internals --

  async #load() {
    const { rows, cursor, total } = await this.#snapshot();
    this.total = total;
    this.cursor = cursor;
    this.store.reset(rows);
    this.onReset(this.store.rows());
    if (!this.connection) return;
    if (this.subscription) {
      this.subscription.resubscribe(this.cursor);
    } else {
      this.subscription = this.connection.subscribe({
        table: this.table,
        where: this.where,
        columns: this.columns,
        cursor: this.cursor,
        onChange: (event) => this.#onEvent(event),
        onResync: () => this.#resync(),
        onStatus: this.onStatus ?? undefined,
        onError: this.onError ?? undefined,
        onPresence: (list, frame) => this.onPresence?.(list, frame),
      });
      for (const { key, state } of this.announcing.values()) this.subscription.announce(key, state);
      this.announcing.clear();
    }
  }

  #pkObject(pk) {
    return pk !== null && typeof pk === "object" ? pk : { [this.pk[0]]: pk };
  }

  /**
   * All rows, page by page in key order (`sort=id&id.gt=<last>`), and the FIRST page's cursor.
   * Later pages come from later snapshots; subscribing from the first one replays every change
   * since, so rows a later page already shows newer only pass through older states on the way.
   * Keyset pages (not offsets) cannot skip a row when rows before it are deleted meanwhile.
   */
  async #snapshot() {
    const key = this.pk[0];
    const keyset = this.pk.length === 1 && !this.query.sort;
    let pageSize = this.limit;
    let first = null;
    let after;
    const rows = [];
    for (;;) {
      const query = { ...this.query, limit: pageSize };
      if (keyset) query.sort = key;
      if (after !== undefined) query[`${key}.gt`] = after;
      let body;
      try {
        body = await this.#send("GET", apiUrl(this.baseUrl, this.resource, undefined, query));
      } catch (error) {
        // A server with a smaller page limit refuses ours: take its default page size instead.
        if (first || pageSize === undefined || !(error instanceof ApiError) || error.status !== 400) throw error;
        pageSize = undefined;
        continue;
      }
      const items = Array.isArray(body?.items) ? body.items : [];
      if (!first) {
        first = body ?? {};
        pageSize ??= body?.limit;
      }
      rows.push(...items);
      if (!keyset || !pageSize || items.length < pageSize || rows.length >= this.maxRows) break;
      after = items.at(-1)[key];
    }
    return { rows, cursor: first.cursor ?? null, total: first.total ?? rows.length };
  }

  #resync() {
    // Rule 5: our cursor is older than the log; only a fresh snapshot is gap-free.
    this.load().catch((error) => this.onError?.({ error: "resync_failed", code: "resync_failed", message: String(error?.message ?? error) }));
  }

  #onEvent(event) {
    const result = this.store.applyEvent(event);
    if (!result) return;
    this.onChange({ ...result, event, mine: this.isMine(event), source: "live" });
  }

  #applyRest(result) {
    if (result) this.onChange({ ...result, mine: true, source: "rest" });
  }

  #idOf(pk) {
    if (pk !== null && typeof pk === "object") {
      if (this.pk.length !== 1) throw new TypeError("REST paths need a single-column primary key");
      return pk[this.pk[0]];
    }
    return pk;
  }

  #versionOf(pk) {
    const row = this.store.get(pk);
    if (!row) throw new ApiError(404, { error: "not_found", message: "this row is not loaded" });
    return row.version;
  }

  #remember(requestId) {
    this.ownRequests.add(requestId);
    if (this.ownRequests.size > 256) this.ownRequests.delete(this.ownRequests.values().next().value);
  }

  async #request(method, id, body, version) {
    const requestId = newRequestId();
    // Remembered before sending: the change event can arrive before the HTTP reply.
    this.#remember(requestId);
    const headers = { "X-Request-ID": requestId };
    if (version !== undefined) headers["If-Match"] = ifMatch(version);
    return this.#send(method, apiUrl(this.baseUrl, this.resource, id), body, headers);
  }

  async #send(method, url, body, extra = {}, retried = false) {
    const headers = { Accept: "application/json", ...extra };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const actor = typeof this.actor === "function" ? this.actor() : this.actor;
    // Header values must be ASCII: the API decodes percent-encoded UTF-8 ("José" works).
    if (actor) headers["X-Actor"] = encodeURIComponent(actor);
    const token = await this.#token();
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await this.fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    const text = await response.text();
    let json = null;
    if (text) {
      try {
        json = parseJson(text, this.numbers);
      } catch {
        json = { error: "bad_response", message: text.slice(0, 200) };
      }
    }
    const refresh = this.getToken ?? this.connection?.getToken;
    if (response.status === 401 && !retried && refresh) {
      // An expired token: one fresh token, one retry (same X-Request-ID, so still ours).
      this.token = await refresh();
      return this.#send(method, url, body, extra, true);
    }
    if (response.status === 412) throw new ConflictError(412, json);
    if (!response.ok) throw new ApiError(response.status, json);
    return json;
  }

  async #token() {
    if (this.token) return this.token;
    if (this.connection?.token) return this.connection.token;
    if (this.getToken) return this.getToken();
    return null;
  }
}
