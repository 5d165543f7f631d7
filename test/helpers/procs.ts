import { randomBytes } from "node:crypto";
import { readdirSync, readlinkSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { liveInSessions } from "./router.ts";

/**
 * True while `pid` is a live process. A zombie counts as gone: it has exited,
 * and on machines whose pid 1 does not reap orphans it stays in /proc.
 */
export async function alive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  if (stat === "") return false;
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0] !== "Z";
}

/** Waits (up to `timeoutMs`, generously) until every pid is gone; returns those still alive. */
export async function waitGone(pids: Iterable<number>, timeoutMs = 10_000): Promise<number[]> {
  const list = [...pids];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const live: number[] = [];
    for (const p of list) if (await alive(p)) live.push(p);
    if (live.length === 0 || Date.now() > deadline) return live;
    await sleep(50);
  }
}

/** Waits (up to `timeoutMs`) until no live process is in any of `sessions`; returns the rest. */
export async function waitSessionsGone(
  sessions: Iterable<number>,
  timeoutMs = 10_000,
): Promise<number[]> {
  const list = [...sessions];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const live = await liveInSessions(list);
    if (live.length === 0 || Date.now() > deadline) return live;
    await sleep(50);
  }
}

/** SIGKILLs every live process in `sessions` (cleanup after a failed test); by pid only. */
export async function killSessions(sessions: Iterable<number>): Promise<void> {
  for (const pid of await liveInSessions(sessions)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

/** Writes `size` random bytes to `path` and returns them. */
export async function writeRandomFile(path: string, size: number): Promise<Buffer> {
  const data = randomBytes(size);
  await writeFile(path, data);
  return data;
}

/** Parses the decimal pids printed one a line at the start of `text`. */
export function pidsFrom(text: string, count: number): number[] {
  const lines = text.split("\n").slice(0, count);
  const pids = lines.map((l) => Number(l.trim()));
  if (pids.length !== count || pids.some((p) => !Number.isInteger(p) || p <= 0)) {
    throw new Error(`expected ${count} pids, got ${JSON.stringify(text.slice(0, 200))}`);
  }
  return pids;
}

/** The pids of task agents whose exec directory (their fd 3) is `dir`. */
export function agentsIn(dir: string): number[] {
  const pids: number[] = [];
  for (const n of readdirSync("/proc")) {
    if (!/^\d+$/.test(n)) continue;
    try {
      if (readlinkSync(`/proc/${n}/exe`).endsWith("taskrouter-agent")) {
        if (readlinkSync(`/proc/${n}/fd/3`) === dir) pids.push(Number(n));
      }
    } catch {
      // gone, or not ours to read
    }
  }
  return pids;
}
