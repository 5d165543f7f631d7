/**
 * Young collections on demand (src/util/young-gc.ts): V8's `gc` is reached
 * without a global in this context, a call runs a real scavenge (seen by a
 * PerformanceObserver of GC entries), YoungCollector collects once per
 * `every` bytes, and the router's pooled decoder runs them while a large
 * stdin write arrives (a router in this process: its collections are ours to
 * observe). Fails when a Node upgrade takes `gc` out of reach.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { constants, PerformanceObserver } from "node:perf_hooks";
import { after, before, describe, it } from "node:test";
import { runInNewContext } from "node:vm";
import { received } from "../src/server/transport/pooled-decoder.ts";
import { YoungCollector, youngCollection } from "../src/util/young-gc.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { closeChecked, MiB } from "./helpers/wire-common.ts";

/**
 * Runs `fn` and counts the minor collections V8 reported meanwhile. GC entries
 * are delivered asynchronously: the count is read once it reached `want()`
 * (evaluated after `fn`), or after 10 s (a hang guard: the caller's assertion
 * then fails with the count seen).
 */
async function minorCollections(
  fn: () => Promise<void> | void,
  want: () => number,
): Promise<number> {
  let n = 0;
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = (e as { detail?: { kind?: number } }).detail?.kind;
      if (kind === constants.NODE_PERFORMANCE_GC_MINOR) n++;
    }
  });
  obs.observe({ entryTypes: ["gc"] });
  try {
    await fn();
    const target = want();
    const deadline = Date.now() + 10_000;
    while (n < target && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return n;
  } finally {
    obs.disconnect();
  }
}

describe("young collections on demand", () => {
  it("reach V8's gc without a global, and run a scavenge", async () => {
    const collect = youngCollection();
    assert.ok(collect, "V8's gc is out of reach");
    assert.equal(typeof (globalThis as { gc?: unknown }).gc, "undefined");
    assert.equal(runInNewContext("typeof gc"), "undefined", "a later context got `gc`");
    assert.equal(youngCollection({ TASKROUTER_YOUNG_GC: "0" }), undefined);
    assert.ok(
      (await minorCollections(
        () => collect(),
        () => 1,
      )) >= 1,
    );
  });

  it("YoungCollector collects once per `every` bytes", () => {
    let runs = 0;
    const c = new YoungCollector(10, () => runs++);
    for (const n of [3, 3, 3]) c.add(n);
    assert.equal(runs, 0);
    c.add(1);
    assert.equal(runs, 1);
    c.add(25);
    assert.equal(runs, 2, "a large add collects once");
    assert.equal(c.collections, 2);
  });
});

describe("young collections while stdin arrives", () => {
  let r: TestRouter;
  let task: string;
  before(async () => {
    r = await startRouter();
    task = await r.newTask();
  });
  after(() => closeChecked(r, []));

  it("the pooled decoder collects per 4 MiB received", async () => {
    const data = randomBytes(20 * MiB);
    const id = await r.client.start(task, ["cat"], { stdout: "devnull", stderr: "pipe" });
    // Calls below the decoder's threshold do not collect; 20 MiB crosses it at least four times.
    const before = received.collections;
    const n = await minorCollections(
      () => r.client.writeStdin(task, id, 0, data, true),
      () => received.collections - before,
    );
    assert.deepEqual(await r.client.wait(task, id), { code: 0 });
    assert.ok(received.collections - before >= 4, "the decoder did not collect per 4 MiB");
    assert.ok(n >= received.collections - before, `${n} minor collections seen`);
  });
});
