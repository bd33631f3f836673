import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  ConflictError,
  LiveCollection,
  MERGE_RETRIES,
  MergeConflictError,
  editedFields,
  mergeEdits,
  sameValue,
  saveFields,
} from "../../web/rowcast.js";
import { fakeFetch } from "./fakes.mjs";

const BASE = "http://rowcast.test";
const row = (fields, version) => ({ id: 3, title: "Dune", author: "Herbert", num_pages: 304, ...fields, version });

describe("mergeEdits (pure)", () => {
  test("a change to other fields merges: only my fields are left to send", () => {
    const base = row({}, 1);
    const theirs = row({ num_pages: 305 }, 2);
    const result = mergeEdits(base, { title: "Dune (2nd ed.)" }, theirs);
    assert.deepEqual(result, { patch: { title: "Dune (2nd ed.)" }, conflicts: [], theirsChanged: ["num_pages"] });
  });

  test("the same field changed differently is a conflict with base, mine and theirs", () => {
    const result = mergeEdits(row({}, 1), { title: "Mine", author: "Me" }, row({ title: "Theirs" }, 2));
    assert.deepEqual(result.conflicts, [{ field: "title", base: "Dune", mine: "Mine", theirs: "Theirs" }]);
    assert.deepEqual(result.patch, { author: "Me" });
  });

  test("the same change on both sides is neither sent again nor a conflict", () => {
    const result = mergeEdits(row({}, 1), { num_pages: 305 }, row({ num_pages: 305 }, 2));
    assert.deepEqual(result, { patch: {}, conflicts: [], theirsChanged: ["num_pages"] });
  });

  test("fields I never edited are never in the patch, whatever they did to them", () => {
    const { patch } = mergeEdits(row({}, 1), { title: "Mine" }, row({ author: "X", num_pages: 1 }, 5));
    assert.deepEqual(Object.keys(patch), ["title"]);
  });

  test("null and undefined are alike; numbers compare by value across number modes", () => {
    assert.ok(sameValue(null, undefined));
    assert.ok(sameValue(305, "305"));
    assert.ok(sameValue({ a: 1, b: [2] }, { b: [2], a: 1 }));
    assert.ok(!sameValue(0, null));
    assert.ok(!sameValue("", null));
    assert.ok(!sameValue(true, "true"));
  });

  test("editedFields keeps only what differs from the row the edit started from", () => {
    const base = row({ author: null }, 1);
    assert.deepEqual(editedFields(base, { title: "Dune", author: null, num_pages: 305 }), { num_pages: 305 });
  });
});

/** A write function over an in-memory row, with someone else's writes queued before ours. */
function server(start, ...interleaved) {
  let current = { ...start };
  const sent = [];
  const write = async (fields, version) => {
    sent.push({ fields, version });
    const theirs = interleaved.shift();
    if (theirs) current = { ...current, ...theirs, version: current.version + 1 };
    if (version !== current.version) throw new ConflictError(412, { error: "precondition_failed", current: { ...current } });
    current = { ...current, ...fields, version: current.version + 1 };
    return { ...current };
  };
  return { write, sent, now: () => current };
}

describe("saveFields (PATCH, 412, merge, retry)", () => {
  test("no one else wrote: one PATCH of my fields at my version", async () => {
    const s = server(row({}, 1));
    const result = await saveFields(s.write, { base: row({}, 1), mine: { title: "T" } });
    assert.deepEqual(s.sent, [{ fields: { title: "T" }, version: 1 }]);
    assert.equal(result.row.title, "T");
    assert.equal(result.attempts, 1);
  });

  test("their change to another field: merged and retried at their version, both survive", async () => {
    const s = server(row({}, 1), { num_pages: 305 });
    const result = await saveFields(s.write, { base: row({}, 1), mine: { title: "T" } });
    assert.deepEqual(s.sent, [
      { fields: { title: "T" }, version: 1 },
      { fields: { title: "T" }, version: 2 },
    ]);
    assert.deepEqual([s.now().title, s.now().num_pages], ["T", 305]);
    assert.deepEqual(result.merged, ["num_pages"]);
  });

  test("the same field: MergeConflictError with both values, nothing written", async () => {
    const s = server(row({}, 1), { title: "Theirs" });
    await assert.rejects(saveFields(s.write, { base: row({}, 1), mine: { title: "Mine", author: "A" } }), (error) => {
      assert.ok(error instanceof MergeConflictError);
      assert.ok(error instanceof ConflictError);
      assert.deepEqual(error.conflicts, [{ field: "title", base: "Dune", mine: "Mine", theirs: "Theirs" }]);
      assert.deepEqual(error.patch, { author: "A" });
      assert.equal(error.current.version, 2);
      return true;
    });
    assert.equal(s.now().title, "Theirs");
    assert.equal(s.now().author, "Herbert");
  });

  test("overwrite = saving my fields against their row: untouched fields stay theirs (305 stays 305)", async () => {
    // They changed pages and title; I changed title. Overwriting writes my title and only that.
    const s = server(row({ title: "Theirs", num_pages: 305 }, 2));
    await saveFields(s.write, { base: s.now(), mine: { title: "Mine" } });
    assert.deepEqual(s.sent, [{ fields: { title: "Mine" }, version: 2 }]);
    assert.equal(s.now().num_pages, 305);
  });

  test("retries are bounded: a row that keeps moving ends in the ConflictError", async () => {
    const s = server(row({}, 1), ...Array.from({ length: 10 }, (_, i) => ({ num_pages: 400 + i })));
    await assert.rejects(saveFields(s.write, { base: row({}, 1), mine: { title: "T" }, retries: 2 }), (error) => {
      assert.ok(error instanceof ConflictError && !(error instanceof MergeConflictError));
      return true;
    });
    assert.equal(s.sent.length, 3);
    assert.ok(MERGE_RETRIES >= 1);
  });

  test("they made my change already: nothing is sent after the 412", async () => {
    const s = server(row({}, 1), { num_pages: 305 });
    const result = await saveFields(s.write, { base: row({}, 1), mine: { num_pages: 305 } });
    assert.equal(s.sent.length, 1);
    assert.equal(result.row.num_pages, 305);
  });

  test("other errors pass through untouched", async () => {
    const boom = new Error("network");
    await assert.rejects(saveFields(async () => { throw boom; }, { base: row({}, 1), mine: { title: "T" } }), (e) => e === boom);
  });
});

describe("LiveCollection.saveFields", () => {
  test("PATCHes only the edited fields with If-Match, merges a 412 and retries at the new ETag", async () => {
    let current = row({}, 1);
    const api = fakeFetch((call) => {
      if (call.method === "GET") return { body: { items: [current], cursor: "c", total: 1, limit: 500, offset: 0 } };
      if (call.headers["If-Match"] === '"1"') {
        current = { ...current, num_pages: 305, version: 2 }; // someone else got there first
        return { status: 412, body: { error: "precondition_failed", message: "stale", current } };
      }
      current = { ...current, ...call.body, version: current.version + 1 };
      return { body: current };
    });
    const books = new LiveCollection({ baseUrl: BASE, resource: "books", fetch: api.fetch });
    await books.load();
    const base = books.get(3);
    const result = await books.saveFields(3, { base, mine: { title: "Dune (2nd ed.)" } });
    const patches = api.calls.filter((c) => c.method === "PATCH");
    assert.deepEqual(
      patches.map((c) => [c.headers["If-Match"], c.body]),
      [
        ['"1"', { title: "Dune (2nd ed.)" }],
        ['"2"', { title: "Dune (2nd ed.)" }],
      ],
    );
    assert.deepEqual([result.row.title, result.row.num_pages, result.row.version], ["Dune (2nd ed.)", 305, 3]);
    assert.equal(books.get(3).num_pages, 305);
  });
});
