import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff } from "../../web/rowcast.js";

test("the window doubles per attempt up to the cap", () => {
  const backoff = new Backoff({ base: 100, cap: 1000, random: () => 0.999999 });
  const delays = Array.from({ length: 6 }, () => backoff.next());
  assert.deepEqual(delays, [99, 199, 399, 799, 999, 999]);
});

test("full jitter: any delay from zero up to the window", () => {
  const low = new Backoff({ base: 100, cap: 1000, random: () => 0 });
  assert.deepEqual([low.next(), low.next(), low.next()], [0, 0, 0]);
  const mid = new Backoff({ base: 100, cap: 1000, random: () => 0.5 });
  assert.deepEqual([mid.next(), mid.next(), mid.next()], [50, 100, 200]);
});

test("reset starts again from the base window", () => {
  const backoff = new Backoff({ base: 100, cap: 1000, random: () => 0.5 });
  backoff.next();
  backoff.next();
  backoff.reset();
  assert.equal(backoff.next(), 50);
});

test("the window stays finite after very many attempts", () => {
  const backoff = new Backoff({ base: 500, cap: 30000, random: () => 0.5 });
  backoff.attempt = 5000;
  assert.equal(backoff.next(), 15000);
});

test("defaults: half a second growing to thirty seconds", () => {
  const backoff = new Backoff();
  assert.equal(backoff.ceiling(), 500);
  backoff.attempt = 20;
  assert.equal(backoff.ceiling(), 30000);
});
