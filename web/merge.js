// Field-level merges of concurrent edits (docs/PROTOCOL.md, "Concurrent edits").
//
// A person edits some fields of a row they read at version v (`base`). Their save sends only
// those fields (`mine`) as a PATCH with If-Match: "v". When someone else wrote the row first the
// API answers 412 with the row as it is now (`theirs`); then, per field of `mine`:
//   - they did not touch it (theirs == base): mine still applies;
//   - they made the same change (theirs == mine): nothing left to send for it;
//   - they changed it to something else: a conflict only the person can settle.
// With no conflict the save is retried against their version, so both changes survive; fields
// the person never edited are never sent, so they can never be reverted.

import { ConflictError } from "./errors.js";

/** Retries after a 412 merged cleanly, before giving up: a row written this often needs a person. */
export const MERGE_RETRIES = 3;

/** Equal as the API would store them: null and undefined alike, numbers by value, objects by content. */
export function sameValue(a, b) {
  a ??= null;
  b ??= null;
  if (a === b) return true;
  if (a === null || b === null) return false;
  // numbers: "string" mode may hand us the text of a number the other side holds as a number.
  if ((typeof a === "number" || typeof a === "bigint" || typeof a === "string") && typeof a !== typeof b) {
    return typeof b !== "object" && typeof b !== "boolean" && String(a) === String(b);
  }
  if (typeof a === "object" && typeof b === "object") return stable(a) === stable(b);
  return false;
}

function stable(value) {
  if (value === null || typeof value !== "object") return typeof value === "bigint" ? String(value) : JSON.stringify(value ?? null);
  if (Array.isArray(value)) return `[${value.map(stable).join(",")}]`;
  return `{${Object.keys(value)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${stable(value[k])}`)
    .join(",")}}`;
}

/** The fields of `values` that differ from `base`: what the person actually edited. */
export function editedFields(base, values) {
  const edits = {};
  for (const [field, value] of Object.entries(values)) {
    if (!sameValue(base?.[field], value)) edits[field] = value;
  }
  return edits;
}

/**
 * mergeEdits(base, mine, theirs) -> {patch, conflicts, theirsChanged}
 *
 * base: the row the edit started from; mine: only the fields the person edited; theirs: the row
 * now. `patch` is what is still to send (mine minus what they already wrote the same way);
 * `conflicts` lists the fields both changed differently, as {field, base, mine, theirs};
 * `theirsChanged` names the fields of `theirs` that moved since `base` (for telling the person).
 * Pure: no I/O, no DOM.
 */
export function mergeEdits(base, mine, theirs) {
  const patch = {};
  const conflicts = [];
  for (const [field, value] of Object.entries(mine)) {
    const was = base?.[field];
    const now = theirs?.[field];
    if (sameValue(now, value)) continue; // same change on both sides
    if (sameValue(now, was)) patch[field] = value; // untouched by them
    else conflicts.push({ field, base: was ?? null, mine: value, theirs: now ?? null });
  }
  const theirsChanged = Object.keys(theirs ?? {}).filter((f) => !BOOKKEEPING.has(f) && !sameValue(base?.[f], theirs[f]));
  return { patch, conflicts, theirsChanged };
}

// Columns every write bumps: a change of these alone is not someone else's edit.
const BOOKKEEPING = new Set(["version", "created_at", "updated_at"]);

/** A save stopped at fields both sides changed; `conflicts` as from mergeEdits, `current` the row now. */
export class MergeConflictError extends ConflictError {
  constructor({ current, conflicts, patch, theirsChanged }) {
    super(412, { error: "merge_conflict", message: `changed by someone else too: ${conflicts.map((c) => c.field).join(", ")}`, current });
    this.name = "MergeConflictError";
    this.conflicts = conflicts;
    this.patch = patch; // the non-conflicting part of the edit, still unsaved
    this.theirsChanged = theirsChanged;
  }
}

/**
 * saveFields(write, {base, mine, version?, retries?}) -> {row, merged, attempts}
 *
 * `write(fields, version)` sends one PATCH with If-Match for `version` and resolves to the new
 * row, or rejects with a ConflictError carrying `current` (LiveCollection.update does exactly
 * that). On 412 the edit is merged onto `current` with mergeEdits and retried, at most
 * `retries` times; a field both sides changed rejects with MergeConflictError instead, having
 * written nothing. `merged` lists the fields someone else changed that the save kept.
 * With nothing left to send (they made the very same change) it resolves without writing.
 */
export async function saveFields(write, { base, mine, version = base?.version, retries = MERGE_RETRIES }) {
  let patch = { ...mine };
  let from = base;
  let at = version;
  const merged = new Set();
  for (let attempt = 1; ; attempt++) {
    if (Object.keys(patch).length === 0) return { row: from, merged: [...merged], attempts: attempt - 1 };
    try {
      const row = await write(patch, at);
      return { row, merged: [...merged], attempts: attempt };
    } catch (error) {
      if (!(error instanceof ConflictError) || !error.current || attempt > retries) throw error;
      const current = error.current;
      const result = mergeEdits(from, patch, current);
      for (const field of result.theirsChanged) merged.add(field);
      if (result.conflicts.length) throw new MergeConflictError({ current, ...result });
      // Their row is the new base: the next 412, if any, is about changes made after it.
      patch = result.patch;
      from = current;
      at = current.version;
    }
  }
}
