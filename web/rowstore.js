// The per-row applier (PROTOCOL.md "Client rules"): rows keyed by table + canonical JSON of the
// primary key, each remembering the id of the last change applied to it. A change applies only
// if its id is greater, so duplicates and replays can never move a row backwards.
// Pure logic: no I/O.

import { canonicalJson, pkOf, qualify } from "./protocol.js";

/**
 * One table's rows. Entries outlive deletes as tombstones ({id, row: null}) so a late replay of
 * an older change cannot bring a deleted row back.
 *
 * `apply*` methods return null when nothing changed, else
 * {kind: "insert" | "update" | "delete" | "truncate", key, row, prev, oldKey?, removed?, changed}
 * where `changed` lists the columns whose values differ between prev and row.
 */
export class RowStore {
  constructor({ table, pk = ["id"], versionColumn = "version" }) {
    this.table = qualify(table);
    this.pk = pk;
    this.versionColumn = versionColumn;
    this.entries = new Map();
    this.truncatedAt = 0;
  }

  key(pk) {
    return `${this.table} ${canonicalJson(pk)}`;
  }

  keyOfRow(row) {
    return this.key(pkOf(row, this.pk));
  }

  /** Replace everything with a snapshot; snapshot rows count as change id 0. */
  reset(rows) {
    this.entries.clear();
    this.truncatedAt = 0;
    for (const row of rows) this.entries.set(this.keyOfRow(row), { id: 0, row });
  }

  get size() {
    let n = 0;
    for (const entry of this.entries.values()) if (entry.row) n += 1;
    return n;
  }

  /** The live rows, in the order they were first seen. */
  rows() {
    const rows = [];
    for (const entry of this.entries.values()) if (entry.row) rows.push(entry.row);
    return rows;
  }

  /** The row with this primary key (an object, or the value of a one-column key), or undefined. */
  get(pk) {
    const object = pk !== null && typeof pk === "object" ? pk : { [this.pk[0]]: pk };
    return this.entries.get(this.key(object))?.row ?? undefined;
  }

  /** The id of the last change applied to this key (0 for snapshot rows), or undefined. */
  lastId(key) {
    return this.entries.get(key)?.id;
  }

  /** Apply one change event; returns what changed, or null for a dropped/duplicate event. */
  applyEvent(event) {
    const id = Number(event.id);
    if (event.op === "truncate") return this.#truncate(id);
    // Rule 2, truncate part: changes that committed before the truncate arrive too late.
    if (id < this.truncatedAt) return null;
    let oldKey;
    let removed;
    const key = this.key(event.pk);
    if (event.op === "update" && event.old) {
      // Rule 3: the update changed the key; the row under the old key is gone.
      const oldPk = { ...event.pk };
      let moved = false;
      for (const column of Object.keys(event.pk)) {
        if (Object.hasOwn(event.old, column)) {
          oldPk[column] = event.old[column];
          moved = true;
        }
      }
      const candidate = this.key(oldPk);
      if (moved && candidate !== key) {
        const entry = this.entries.get(candidate);
        if (!entry || entry.id < id) {
          oldKey = candidate;
          removed = entry?.row ?? null;
          this.entries.set(candidate, { id, row: null });
        }
      }
    }
    const entry = this.entries.get(key);
    if (entry && entry.id >= id) return oldKey ? this.#result("delete", oldKey, null, removed) : null;
    if (entry && entry.id === 0 && this.#olderThanSnapshot(event.row, entry.row)) {
      // A snapshot row already newer than this change (its version is higher): the change is
      // one the snapshot saw. Record the id so its duplicates drop too.
      entry.id = id;
      return oldKey ? this.#result("delete", oldKey, null, removed) : null;
    }
    const prev = entry?.row ?? null;
    const row = event.op === "delete" ? null : (event.row ?? null);
    this.entries.set(key, { id, row });
    if (!prev && !row) return oldKey ? this.#result("delete", oldKey, null, removed) : null;
    const kind = !row ? "delete" : prev || oldKey ? "update" : "insert";
    const result = this.#result(kind, key, row, prev ?? removed ?? null);
    if (oldKey) result.oldKey = oldKey;
    return result;
  }

  /** A row returned by a REST write: applied unless the store already holds a newer version. */
  applyRow(row) {
    if (!row || this.pk.some((column) => row[column] === undefined)) return null;
    const key = this.keyOfRow(row);
    const entry = this.entries.get(key);
    if (entry && !entry.row) return null; // deleted meanwhile: a create/update reply must not resurrect it
    if (entry && this.#versionOf(entry.row) !== undefined && this.#versionOf(row) !== undefined) {
      if (this.#versionOf(entry.row) >= this.#versionOf(row)) return null;
    }
    this.entries.set(key, { id: entry?.id ?? 0, row });
    return this.#result(entry ? "update" : "insert", key, row, entry?.row ?? null);
  }

  /** A REST delete succeeded: drop the row, keeping its last id so older replays stay dropped. */
  applyRemoval(pk) {
    const key = this.key(typeof pk === "object" && pk !== null ? pk : { [this.pk[0]]: pk });
    const entry = this.entries.get(key);
    if (!entry?.row) return null;
    this.entries.set(key, { id: entry.id, row: null });
    return this.#result("delete", key, null, entry.row);
  }

  #truncate(id) {
    if (id <= this.truncatedAt) return null;
    this.truncatedAt = id;
    // Only rows last changed before the truncate go: a change with a higher id committed after
    // it (the truncate's lock orders them), even if a replay delivered it first.
    const removed = [];
    for (const [key, entry] of this.entries) {
      if (entry.id < id) {
        if (entry.row) removed.push(entry.row);
        this.entries.delete(key);
      }
    }
    return { kind: "truncate", key: null, row: null, prev: null, removed, changed: [] };
  }

  #versionOf(row) {
    const value = this.versionColumn ? row?.[this.versionColumn] : undefined;
    return typeof value === "number" ? value : undefined;
  }

  #olderThanSnapshot(eventRow, snapshotRow) {
    const theirs = this.#versionOf(eventRow);
    const ours = this.#versionOf(snapshotRow);
    return theirs !== undefined && ours !== undefined && theirs < ours;
  }

  #result(kind, key, row, prev) {
    return { kind, key, row, prev, changed: changedColumns(prev, row) };
  }
}

/** Columns whose values differ between two row images (all columns of the one that exists). */
export function changedColumns(prev, row) {
  if (!prev && !row) return [];
  if (!prev) return Object.keys(row);
  if (!row) return Object.keys(prev);
  const columns = new Set([...Object.keys(prev), ...Object.keys(row)]);
  return [...columns].filter((c) => canonicalJson(prev[c]) !== canonicalJson(row[c]));
}
