/**
 * setLongTimeout (src/util/long-timer.ts) under node:test's mock timers,
 * which run a plain setTimeout past 2^31-1 ms after 1 ms as Node does: a
 * delay of days fires at its time, not at once; clear() stops it in any step.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it, mock } from "node:test";
import { MAX_TIMER_MS, setLongTimeout } from "../src/util/long-timer.ts";

const DAY = 24 * 60 * 60 * 1000;

describe("setLongTimeout", () => {
  beforeEach(() => mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000_000 }));
  afterEach(() => mock.timers.reset());

  it("the mock clamps as Node does: a plain setTimeout past the limit fires at once", () => {
    let fired = 0;
    setTimeout(() => fired++, MAX_TIMER_MS + 1);
    mock.timers.tick(1);
    assert.equal(fired, 1);
  });

  it("fires once, at its time, for delays past setTimeout's limit (30 days, 3,000,000 s)", () => {
    for (const ms of [30 * DAY, 3_000_000_000 - 250]) {
      let fired = 0;
      setLongTimeout(() => fired++, ms);
      mock.timers.tick(1);
      assert.equal(fired, 0, `${ms}: not at once`);
      mock.timers.tick(MAX_TIMER_MS);
      assert.equal(fired, 0, `${ms}: not after the first step`);
      mock.timers.tick(ms - MAX_TIMER_MS - 2);
      assert.equal(fired, 0, `${ms}: not 1 ms early`);
      mock.timers.tick(1);
      assert.equal(fired, 1, `${ms}: at its time`);
      mock.timers.tick(10 * DAY);
      assert.equal(fired, 1, `${ms}: once`);
    }
  });

  it("short and past delays behave as setTimeout's", () => {
    const order: string[] = [];
    setLongTimeout(() => order.push("past"), -5);
    setLongTimeout(() => order.push("10ms"), 10);
    mock.timers.tick(0);
    assert.deepEqual(order, ["past"]);
    mock.timers.tick(10);
    assert.deepEqual(order, ["past", "10ms"]);
  });

  it("clear() stops it before the first step and after a re-arm", () => {
    let fired = 0;
    setLongTimeout(() => fired++, 40 * DAY).clear();
    const later = setLongTimeout(() => fired++, 40 * DAY);
    mock.timers.tick(MAX_TIMER_MS + 1); // re-armed once
    later.clear();
    mock.timers.tick(40 * DAY);
    assert.equal(fired, 0);
  });

  it("unref() keeps the timer working and returns it", () => {
    let fired = 0;
    const t = setLongTimeout(() => fired++, 30 * DAY);
    assert.equal(t.unref(), t);
    mock.timers.tick(30 * DAY);
    assert.equal(fired, 1);
  });
});
