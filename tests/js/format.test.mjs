import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { actorLabel, bookValues, changeLine, clockTime, conflictText, differingColumns, formValues, keyLabel, listWords, meaningfulColumns, presenceText, rowLabel } from "../../web/format.js";

const psql = { user: "postgres", app: "psql", addr: "127.0.0.1", actor: null, request_id: null };
const api = { user: "postgres", app: "api", actor: "alice", request_id: "r1" };
const at = new Date(2026, 10, 27, 14, 2, 11).toISOString();

test("a psql write reads 'postgres via psql'; an API write names the actor", () => {
  assert.equal(actorLabel(psql), "postgres via psql");
  assert.equal(actorLabel(api), "alice via api");
  assert.equal(actorLabel(api, true), "you");
  assert.equal(actorLabel(null), "someone");
});

test("the row line says who and when, in local hh:mm:ss", () => {
  assert.equal(changeLine("update", psql, at), "changed by postgres via psql at 14:02:11");
  assert.equal(changeLine("insert", api, at), "added by alice via api at 14:02:11");
  assert.equal(changeLine("update", api, at, true), "changed by you at 14:02:11");
  assert.equal(clockTime("not a date"), "");
  assert.equal(clockTime(null), "");
});

test("conflict texts name who changed which columns, without bookkeeping columns", () => {
  const columns = ["num_pages", "version", "updated_at"];
  assert.equal(meaningfulColumns(columns).join(), "num_pages");
  assert.equal(
    conflictText({ reason: "changed", actor: psql, at, columns }),
    "This book was changed by postgres via psql at 14:02:11 while you were editing it (changed: pages).",
  );
  assert.equal(
    conflictText({ reason: "stale", actor: null, at: null, columns: ["title", "author"] }),
    "Not saved: this book was changed by someone else since you started editing (changed: title and author).",
  );
  assert.equal(conflictText({ reason: "deleted", actor: psql, at }), "This book was deleted by postgres via psql at 14:02:11 while you were editing it.");
  assert.match(conflictText({ reason: "delete", actor: api, at, columns: ["title"] }), /Delete it anyway\?$/);
  assert.equal(listWords(["a", "b", "c"]), "a, b and c");
});

test("form values are trimmed and checked like the database checks them", () => {
  assert.deepEqual(bookValues({ title: "  Dune ", author: " Frank ", num_pages: "412" }), { values: { title: "Dune", author: "Frank", num_pages: 412 } });
  assert.deepEqual(bookValues({ title: "Dune", author: "", num_pages: "" }), { values: { title: "Dune", author: "", num_pages: null } });
  assert.match(bookValues({ title: "   " }).error, /title is required/);
  assert.match(bookValues({ title: "x", num_pages: "0" }).error, /1 to 100000/);
  assert.match(bookValues({ title: "x", num_pages: "2.5" }).error, /whole number/);
  assert.match(bookValues({ title: "x".repeat(301) }).error, /300/);
});

test("differingColumns compares the listed columns only", () => {
  assert.deepEqual(differingColumns({ title: "a", version: 1 }, { title: "b", version: 2 }, ["title", "author"]), ["title"]);
  assert.deepEqual(differingColumns(undefined, { title: "b" }, ["title"]), ["title"]);
});

describe("rowLabel names a row for the event log", () => {
  const at = { table: "books", pk: { id: 3 } };
  test("by title, name or label, in that order", () => {
    assert.equal(rowLabel({ ...at, row: { id: 3, title: "Dune" } }), "Dune");
    assert.equal(rowLabel({ ...at, table: "authors", row: { id: 3, name: "Le Guin" } }), "Le Guin");
    assert.equal(rowLabel({ ...at, row: { id: 3, label: "L" } }), "L");
  });
  test("a delete from its old row", () => {
    assert.equal(rowLabel({ ...at, op: "delete", row: null, old: { id: 3, title: "Gone" } }), "Gone");
  });
  test("the table and key when there is no readable column, or it is empty", () => {
    assert.equal(rowLabel({ ...at, row: { id: 3, n: 1 } }), "books 3");
    assert.equal(rowLabel({ ...at, row: { id: 3, title: "  " } }), "books 3");
    assert.equal(rowLabel({ ...at, op: "delete", row: null, old: { id: 3 } }), "books 3");
    assert.equal(rowLabel({ table: "books", op: "truncate", row: null, pk: null }), "books");
    assert.equal(keyLabel({ table: "t", pk: { a: 1, b: 2 } }), "t 1/2");
  });
});

describe("formValues", () => {
  test("a null author and a blank one are the same; pages become numbers", () => {
    assert.deepEqual(formValues({ title: " Dune ", author: null, num_pages: "305" }), { title: "Dune", author: "", num_pages: 305 });
    assert.deepEqual(formValues({ title: "x", author: "", num_pages: "" }), { title: "x", author: "", num_pages: null });
  });
});

test("presence reads editing first, names each person once by their busiest state", () => {
  const entry = (who, state) => ({ who, state, pk: { id: 1 }, session: `${who}-${state}` });
  assert.equal(presenceText([]), "");
  assert.equal(presenceText([entry("Alice", "viewing")]), "Alice is viewing");
  assert.equal(presenceText([entry("Alice", "viewing"), entry("Bob", "viewing")]), "Alice and Bob are viewing");
  assert.equal(presenceText([entry("Alice", "viewing"), entry("Bob", "editing")]), "Bob is editing · Alice is viewing");
  assert.equal(presenceText([entry("Alice", "viewing"), entry("Alice", "editing")]), "Alice is editing");
  assert.equal(presenceText([entry("", "viewing")]), "someone is viewing");
});
