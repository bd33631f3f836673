// Presence bookkeeping of one subscription (docs/PROTOCOL.md "Presence"): what this page
// announces (kept, so it is announced again on every new socket) and who else is there (rebuilt
// from the server's frames after each `subscribed`). Pure: no I/O, testable under node --test.

import { canonicalJson } from "./protocol.js";

export const PRESENCE_STATES = ["viewing", "editing"];

/** The wire frame announcing `state` (or null: withdrawn) on the row `pk` of subscription `ref`. */
export function presenceFrame(ref, pk, state, name) {
  const frame = { type: "presence", ref, pk, state: state ?? null };
  if (name) frame.name = name;
  return frame;
}

export class PresenceBook {
  constructor() {
    this.mine = new Map(); // canonical pk -> {pk, state}
    this.moved = new Map(); // canonical old key of a re-keyed row -> the pk it has now
    this.others = new Map(); // session \0 canonical pk -> entry
  }

  /** The key a row has now: `pk` itself unless an update moved that row to another key. */
  resolve(pk) {
    return this.moved.get(canonicalJson(pk)) ?? pk;
  }

  /** Remember an announcement (on `resolve(pk)`); returns false when it changes nothing (no frame needed). */
  announce(pk, state) {
    if (state !== null && state !== undefined && !PRESENCE_STATES.includes(state)) {
      throw new TypeError(`presence state must be one of ${PRESENCE_STATES.join(", ")} or null`);
    }
    pk = this.resolve(pk);
    const key = canonicalJson(pk);
    const before = this.mine.get(key)?.state ?? null;
    if (state === null || state === undefined) {
      this.mine.delete(key);
      for (const [old, now] of this.moved) if (canonicalJson(now) === key) this.moved.delete(old);
    } else this.mine.set(key, { pk, state });
    return before !== (state ?? null);
  }

  /**
   * A change frame: an update whose `old` holds key columns moved the row to a new key, and the
   * server moved this page's presence on it along (docs/PROTOCOL.md "Presence", key changes).
   * Follow it, so a withdrawal or a new socket names the new key. Returns true when it did.
   */
  follow(change) {
    if (!change || !change.pk || typeof change.pk !== "object") return false;
    if (change.op === "insert") return this.moved.delete(canonicalJson(change.pk)); // the old key is a new row
    if (change.op !== "update" || !change.old) return false;
    const columns = Object.keys(change.pk);
    if (!columns.some((c) => Object.hasOwn(change.old, c))) return false;
    const before = Object.fromEntries(columns.map((c) => [c, Object.hasOwn(change.old, c) ? change.old[c] : change.pk[c]]));
    const was = this.mine.get(canonicalJson(before));
    if (!was) return false;
    this.mine.delete(canonicalJson(before));
    const key = canonicalJson(change.pk);
    if (this.mine.get(key)?.state !== "editing") this.mine.set(key, { pk: change.pk, state: was.state });
    // An announcement still naming the old key (the page has not caught up) means the new one.
    for (const [old, now] of this.moved) if (canonicalJson(now) === canonicalJson(before)) this.moved.set(old, change.pk);
    this.moved.set(canonicalJson(before), change.pk);
    while (this.moved.size > 64) this.moved.delete(this.moved.keys().next().value);
    return true;
  }

  /** Everything this page announces, to send again on a new socket. */
  announced() {
    return [...this.mine.values()];
  }

  /** Apply a server `presence` frame; returns true when the list changed. */
  apply(frame) {
    if (!frame || typeof frame.session !== "string" || !frame.pk) return false;
    const key = `${frame.session}\u0000${canonicalJson(frame.pk)}`;
    if (frame.state === null || frame.state === undefined) return this.others.delete(key);
    const entry = { pk: frame.pk, who: String(frame.who ?? ""), session: frame.session, state: frame.state, since: frame.since ?? null };
    this.others.set(key, entry);
    return true;
  }

  /** Forget who else is there (a new socket, or a new subscription, rebuilds it). */
  clear() {
    const had = this.others.size > 0;
    this.others.clear();
    return had;
  }

  /** Who else is there: [{pk, who, session, state, since}], oldest first. */
  list() {
    return [...this.others.values()].sort((a, b) => String(a.since).localeCompare(String(b.since)));
  }

  /** The entries on one row. */
  on(pk) {
    const key = canonicalJson(pk);
    return this.list().filter((entry) => canonicalJson(entry.pk) === key);
  }
}
