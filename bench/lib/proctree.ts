import { readdir, readFile, writeFile } from "node:fs/promises";
import { procStats } from "./router.ts";

/**
 * Processes found by pid relations only (parent pids from /proc, a cgroup's
 * member list), never by name, and the CPU time and peak RSS of such a set.
 * Only read and measured here: nothing is signalled.
 */

/** The parent pid of every process on this machine (those that vanish mid-scan are skipped). */
async function parents(): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, "utf8").catch(() => "");
    if (!stat) continue;
    // Field 4 (ppid) is the second after the ")" that ends the command name.
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    if (Number.isInteger(ppid)) out.set(Number(name), ppid);
  }
  return out;
}

/** The direct children of `pid`, now. */
export async function childrenOf(pid: number): Promise<number[]> {
  return [...(await parents())].filter(([, ppid]) => ppid === pid).map(([p]) => p);
}

/** `pid` and all its descendants, now. */
export async function treeOf(pid: number): Promise<number[]> {
  const all = await parents();
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) {
    for (const [p, ppid] of all) if (ppid === tree[i]) tree.push(p);
  }
  return tree;
}

/**
 * The members of the cgroup that process `pid` is in: of the unified (v2)
 * hierarchy, or of v1's pids controller on a v1/hybrid machine; [] when none
 * can be read (it is gone, or another layout).
 */
export async function cgroupPeersOf(pid: number): Promise<number[]> {
  const lines = (await readFile(`/proc/${pid}/cgroup`, "utf8").catch(() => "")).split("\n");
  const path = (prefix: RegExp) => lines.find((l) => prefix.test(l))?.replace(prefix, "");
  const v2 = path(/^0::/);
  const pids = path(/^\d+:(?:[^:]*,)?pids(?:,[^:]*)?:/);
  const candidates = [
    ...(v2 === undefined ? [] : [`/sys/fs/cgroup${v2}`, `/sys/fs/cgroup/unified${v2}`]),
    ...(pids === undefined ? [] : [`/sys/fs/cgroup/pids${pids}`]),
  ];
  for (const dir of candidates) {
    const procs = await readFile(`${dir}/cgroup.procs`, "utf8").catch(() => "");
    const members = procs.split("\n").filter(Boolean).map(Number);
    if (members.includes(pid)) return members;
  }
  return [];
}

/** CPU time (utime+stime: each process's own, not its reaped children's) of each live pid of `pids`. */
export async function cpuMsOf(pids: readonly number[]): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const p of pids) {
    const s = await procStats(p).catch(() => undefined);
    if (s) out.set(p, s.cpuMs);
  }
  return out;
}

/**
 * CPU ms spent by each pid of `before` (from cpuMsOf) since then. A process
 * that exited in between counts what it had at `before` (its last ticks are
 * lost): the sets measured here live for the whole measurement.
 */
export async function cpuMsSince(before: Map<number, number>): Promise<number> {
  const after = await cpuMsOf([...before.keys()]);
  let sum = 0;
  for (const [p, ms] of before) sum += Math.max(0, (after.get(p) ?? ms) - ms);
  return sum;
}

/** Resets the peak RSS (VmHWM) of each pid to its current RSS. */
export async function resetPeaks(pids: readonly number[]): Promise<void> {
  for (const p of pids) await writeFile(`/proc/${p}/clear_refs`, "5").catch(() => {});
}

/** The sum of the peak RSS (VmHWM) of `pids`: an upper bound of the set's peak together. */
export async function peakRssOf(pids: readonly number[]): Promise<number> {
  let sum = 0;
  for (const p of pids) sum += (await procStats(p).catch(() => undefined))?.peakRssBytes ?? 0;
  return sum;
}
