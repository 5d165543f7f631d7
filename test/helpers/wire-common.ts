/**
 * Helpers shared by the wire compatibility tests (test/wire-*.test.ts): process
 * liveness checks, router shutdown with a leftover-process check, and small utilities.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, realpath, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { liveInSessions, startRouter, type TestRouter } from "./router.ts";
import { WireClient } from "./wire-client.ts";

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

/** What a wire suite runs on: a host router, a client of the wire stack, one task, a temp dir. */
export interface WireSuite {
  r: TestRouter;
  w: WireClient;
  task: string;
  /** A fresh temp dir (its real path), removed by closeWireSuite. */
  dir: string;
}

/** Starts a WireSuite (the temp dir named `prefix`...); see closeWireSuite. */
export async function openWireSuite(prefix: string): Promise<WireSuite> {
  const r = await startRouter();
  const w = new WireClient(r.address);
  const task = await r.newTask();
  const dir = await realpath(await mkdtemp(join(tmpdir(), prefix)));
  return { r, w, task, dir };
}

/** Removes the suite's temp dir, then closes client and router checking no process is left. */
export async function closeWireSuite(s: WireSuite | undefined): Promise<void> {
  if (!s) return;
  await rm(s.dir, { recursive: true, force: true });
  await closeChecked(s.r, [s.w]);
}
