import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { changedColumns, RowStore } from "../../web/rowcast.js";

const book = (id, title, version = 1, extra = {}) => ({ id, title, version, ...extra });
const ev = (id, op, pk, row, old = null) => ({ id, schema: "public", table: "books", op, pk, row, old, actor: {} });
const ins = (id, row) => ev(id, "insert", { id: row.id }, row);
const upd = (id, row, old) => ev(id, "update", { id: row.id }, row, old);
const del = (id, row) => ev(id, "delete", { id: row.id }, null, row);
const store = (rows = []) => {
  const s = new RowStore({ table: "books" });
  s.reset(rows);
  return s;
};
const titles = (s) => s.rows().map((r) => `${r.id}:${r.title}`).sort();

describe("the per-row rule", () => {
  test("snapshot rows count as id 0, so any change to them applies", () => {
    const s = store([book(1, "Dun")]);
    const result = s.applyEvent(upd(5, book(1, "Dune", 2), { title: "Dun", version: 1 }));
    assert.equal(result.kind, "update");
    assert.deepEqual(result.changed, ["title", "version"]);
    assert.equal(s.get(1).title, "Dune");
  });

  test("an insert appears with kind insert", () => {
    const s = store();
    assert.equal(s.applyEvent(ins(3, book(9, "New"))).kind, "insert");
    assert.equal(s.size, 1);
  });

  test("a duplicate id is dropped", () => {
    const s = store();
    s.applyEvent(ins(3, book(9, "New")));
    assert.equal(s.applyEvent(ins(3, book(9, "New"))), null);
  });

  test("an older change arriving late never moves the row backwards", () => {
    const s = store();
    s.applyEvent(upd(11, book(1, "v3", 3), { title: "v2" }));
    assert.equal(s.applyEvent(upd(10, book(1, "v2", 2), { title: "v1" })), null);
    assert.equal(s.get(1).title, "v3");
  });

  test("a delete leaves a tombstone: older replays cannot resurrect the row", () => {
    const s = store([book(1, "A")]);
    assert.equal(s.applyEvent(del(8, book(1, "A"))).kind, "delete");
    assert.equal(s.applyEvent(upd(7, book(1, "B", 2), { title: "A" })), null);
    assert.equal(s.get(1), undefined);
    assert.equal(s.size, 0);
  });

  test("a newer insert of a deleted key brings it back", () => {
    const s = store([book(1, "A")]);
    s.applyEvent(del(8, book(1, "A")));
    assert.equal(s.applyEvent(ins(9, book(1, "again"))).kind, "insert");
  });

  test("a delete of a row never seen changes nothing visible", () => {
    const s = store();
    assert.equal(s.applyEvent(del(4, book(2, "x"))), null);
  });
});

describe("truncate", () => {
  test("clears the table and reports the removed rows", () => {
    const s = store([book(1, "A"), book(2, "B")]);
    const result = s.applyEvent({ id: 20, table: "books", op: "truncate", pk: null, row: null });
    assert.equal(result.kind, "truncate");
    assert.equal(result.removed.length, 2);
    assert.equal(s.size, 0);
  });

  test("changes older than the truncate arriving later are dropped", () => {
    const s = store();
    s.applyEvent({ id: 20, table: "books", op: "truncate" });
    assert.equal(s.applyEvent(ins(19, book(5, "late"))), null);
    assert.equal(s.applyEvent(ins(21, book(6, "after"))).kind, "insert");
  });

  test("a change after the truncate that a replay delivered first survives it", () => {
    const s = store([book(1, "A")]);
    s.applyEvent(ins(21, book(6, "after")));
    const result = s.applyEvent({ id: 20, table: "books", op: "truncate" });
    assert.deepEqual(result.removed.map((r) => r.id), [1]);
    assert.deepEqual(titles(s), ["6:after"]);
  });

  test("a replayed truncate is a duplicate", () => {
    const s = store();
    s.applyEvent({ id: 20, table: "books", op: "truncate" });
    s.applyEvent(ins(21, book(6, "after")));
    assert.equal(s.applyEvent({ id: 20, table: "books", op: "truncate" }), null);
    assert.equal(s.size, 1);
  });
});

describe("primary-key changes", () => {
  test("an update whose old image holds key columns removes the old key", () => {
    const s = store([book(1, "A")]);
    const result = s.applyEvent(ev(5, "update", { id: 100 }, book(100, "A", 2), { id: 1, version: 1 }));
    assert.equal(result.kind, "update");
    assert.equal(result.oldKey, s.key({ id: 1 }));
    assert.equal(s.get(1), undefined);
    assert.equal(s.get(100).title, "A");
    assert.equal(result.prev.title, "A");
  });

  test("a late older change to the old key cannot bring it back", () => {
    const s = store([book(1, "A")]);
    s.applyEvent(ev(5, "update", { id: 100 }, book(100, "A", 2), { id: 1 }));
    assert.equal(s.applyEvent(upd(4, book(1, "old", 2), { title: "A" })), null);
    assert.equal(s.size, 1);
  });

  test("a row leaving a filtered view arrives as a delete with only its key", () => {
    const s = store([book(1, "A")]);
    const result = s.applyEvent({ ...ev(6, "delete", { id: 1 }, null, { id: 1 }), moved: "out" });
    assert.equal(result.kind, "delete");
    assert.equal(s.size, 0);
  });

  test("composite keys are keyed on all their columns", () => {
    const s = new RowStore({ table: "editions", pk: ["book", "n"] });
    s.reset([{ book: 1, n: 1, x: "a" }, { book: 1, n: 2, x: "b" }]);
    s.applyEvent({ id: 3, table: "editions", op: "update", pk: { n: 2, book: 1 }, row: { book: 1, n: 2, x: "c" }, old: { x: "b" } });
    assert.deepEqual(s.rows().map((r) => r.x), ["a", "c"]);
    assert.equal(s.get({ book: 1, n: 2 }).x, "c");
  });
});

describe("snapshot and REST rows", () => {
  test("a change the snapshot already reflects (lower version) is not applied", () => {
    const s = store([book(1, "v3", 3)]);
    assert.equal(s.applyEvent(upd(10, book(1, "v2", 2), { title: "v1" })), null);
    assert.equal(s.get(1).title, "v3");
    assert.equal(s.applyEvent(upd(10, book(1, "v2", 2), { title: "v1" })), null);
    assert.equal(s.applyEvent(upd(12, book(1, "v4", 4), { title: "v3" })).kind, "update");
  });

  test("a REST reply applies unless the store holds a newer version", () => {
    const s = store([book(1, "A", 1)]);
    assert.equal(s.applyRow(book(1, "B", 2)).kind, "update");
    s.applyEvent(upd(9, book(1, "C", 3), { title: "B" }));
    assert.equal(s.applyRow(book(1, "B", 2)), null);
    assert.equal(s.get(1).title, "C");
  });

  test("a REST reply for a row deleted meanwhile does not resurrect it", () => {
    const s = store([book(1, "A", 1)]);
    s.applyEvent(del(9, book(1, "A")));
    assert.equal(s.applyRow(book(1, "B", 2)), null);
  });

  test("a created row is inserted, and its echo changes nothing", () => {
    const s = store();
    assert.equal(s.applyRow(book(4, "N", 1)).kind, "insert");
    const echo = s.applyEvent(ins(30, book(4, "N", 1)));
    assert.deepEqual(echo.changed, []);
  });

  test("a REST delete keeps the row's last id", () => {
    const s = store();
    s.applyEvent(ins(5, book(4, "N")));
    assert.equal(s.applyRemoval(4).kind, "delete");
    assert.equal(s.lastId(s.key({ id: 4 })), 5);
    assert.equal(s.applyEvent(ins(5, book(4, "N"))), null);
  });

  test("changedColumns compares values, not identity", () => {
    assert.deepEqual(changedColumns({ a: [1], b: 2 }, { a: [1], b: 3 }), ["b"]);
    assert.deepEqual(changedColumns(null, { a: 1 }), ["a"]);
  });
});

// A seeded generator, so a failure reproduces.
function prng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function history(random) {
  // Ids are handed out in commit order per row; a truncate in the middle of it.
  const events = [];
  const rows = new Map();
  let id = 0;
  for (let i = 0; i < 60; i++) {
    id += 1 + Math.floor(random() * 3);
    const pk = 1 + Math.floor(random() * 6);
    if (i === 30) {
      events.push({ id, table: "books", op: "truncate", pk: null, row: null });
      rows.clear();
      continue;
    }
    const current = rows.get(pk);
    if (!current) {
      const row = book(pk, `t${id}`, 1);
      rows.set(pk, row);
      events.push(ins(id, row));
    } else if (random() < 0.25) {
      rows.delete(pk);
      events.push(del(id, current));
    } else {
      const row = book(pk, `t${id}`, current.version + 1);
      rows.set(pk, row);
      events.push(upd(id, row, { title: current.title, version: current.version }));
    }
  }
  return { events, final: [...rows.values()].map((r) => `${r.id}:${r.title}`).sort() };
}

test("any delivery order with duplicates converges to the committed state", () => {
  for (let seed = 1; seed <= 200; seed++) {
    const random = prng(seed);
    const { events, final } = history(random);
    // At-least-once: every event delivered, some twice, in any order at all (stronger than the
    // server's promise of commit order per row on one stream).
    const delivered = [...events, ...events.filter(() => random() < 0.3)];
    for (let i = delivered.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [delivered[i], delivered[j]] = [delivered[j], delivered[i]];
    }
    const s = store();
    for (const event of delivered) s.applyEvent(event);
    assert.deepEqual(titles(s), final, `seed ${seed}`);
  }
});
