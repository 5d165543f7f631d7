/**
 * Tools for tests that check what a router in the test process still holds
 * (test/cancelled-calls.test.ts, test/cancelled-stdin.test.ts): full
 * collections (V8's `gc`, taken as src/util/young-gc.ts does), patched
 * prototypes, and waits that are hang guards, not timing assertions.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;
export const tick = () => new Promise((r) => setImmediate(r));

/** How many of `refs` still point to something after full collections. */
export async function alive(refs: WeakRef<object>[]): Promise<number> {
  for (let i = 0; i < 3; i++) {
    await tick(); // a WeakRef made or read in this job keeps its target until the job ends
    gc();
  }
  return refs.filter((r) => r.deref() !== undefined).length;
}

/** Replaces `obj[name]` until the returned function is called. */
export function patch<T extends object, K extends keyof T>(
  obj: T,
  name: K,
  value: T[K],
): () => void {
  const orig = obj[name];
  obj[name] = value;
  return () => {
    obj[name] = orig;
  };
}

/** Resolves once `signal` aborted (the listener holds nothing of the caller). */
export function abortOf(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) =>
    signal.addEventListener("abort", () => resolve(), { once: true }),
  );
}

/** A promise and its resolve. */
export function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve = () => {};
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Waits (a hang guard, not a timing assertion) until `cond()` holds. */
export async function until(what: string, cond: () => boolean | Promise<boolean>): Promise<void> {
  for (const end = Date.now() + 60_000; !(await cond()); await sleep(10)) {
    if (Date.now() > end) throw new Error(`never: ${what}`);
  }
}
