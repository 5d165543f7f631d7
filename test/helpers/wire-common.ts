/**
 * Helpers shared by the wire compatibility tests (test/wire-*.test.ts): process
 * liveness checks, router shutdown with a leftover-process check, and small utilities.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { liveInSessions, type TestRouter } from "./router.ts";
import type { WireClient } from "./wire-client.ts";

export const MiB = 1024 * 1024;
let seq = 0;
/** A fresh id with `prefix` (unique within the test process). */
export const nextId = (prefix: string) => `${prefix}-${++seq}`;

/** True while `pid` exists and is not a zombie. */
export async function alive(pid: number): Promise<boolean> {
  const s = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return s !== "" && s.slice(s.lastIndexOf(")") + 2)[0] !== "Z";
}

/** Waits (bounded) for a SIGKILLed process to disappear; returns whether it is still alive. */
export async function stillAliveAfterKill(pid: number): Promise<boolean> {
  for (let i = 0; i < 250 && (await alive(pid)); i++) await sleep(20);
  return alive(pid);
}

/** Exec leaders the router knows of (recorded before close, checked after). */
export function leaders(r: TestRouter): number[] {
  return r.daemon.tasks
    .list()
    .flatMap((t) => t.listExecs().map((e) => e.pid))
    .filter((p): p is number => p !== undefined);
}

/** Closes clients and router, then asserts no process of any exec session is left. */
export async function closeChecked(
  r: TestRouter | undefined,
  clients: WireClient[],
): Promise<void> {
  if (!r) return;
  const pids = leaders(r);
  for (const c of clients) c.close();
  await r.close();
  assert.deepEqual(await liveInSessions(pids), [], "processes left behind after router close");
}

/** A promise that records whether it has settled. */
export function tracked<T>(p: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  const promise = p.finally(() => {
    done = true;
  });
  promise.catch(() => {});
  return { promise, settled: () => done };
}

export const text = (b: Buffer) => b.toString("utf8");
