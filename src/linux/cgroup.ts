import { existsSync, readFileSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/** Where this machine's cgroup hierarchies are mounted. */
export const CGROUP_ROOT = "/sys/fs/cgroup";

let v2: boolean | undefined;

/** True on a unified (v2-only) cgroup hierarchy (read once: it does not change while we run). */
export function cgroupV2(): boolean {
  v2 ??= existsSync(join(CGROUP_ROOT, "cgroup.controllers"));
  return v2;
}

/** The controller list of the cgroup2 mount of a hybrid host. */
export const HYBRID_V2_CONTROLLERS = join(CGROUP_ROOT, "unified", "cgroup.controllers");

/**
 * True on a hybrid host (v1 controllers, plus a cgroup2 mount at
 * /sys/fs/cgroup/unified) whose cgroup2 mount has controllers of its own
 * (crun 1.8 refuses to start any container there).
 */
export function hybridWithV2Controllers(): boolean {
  try {
    return readFileSync(HYBRID_V2_CONTROLLERS, "utf8").trim() !== "";
  } catch {
    return false;
  }
}

/**
 * The directories of cgroup `path` (an OCI `cgroupsPath`, absolute) on this
 * machine: one on cgroup v2, one per v1 controller that has it.
 */
export function cgroupDirs(path: string): string[] {
  if (cgroupV2()) return [join(CGROUP_ROOT, path)];
  return ["memory", "cpu", "pids", "cpuacct", "cpuset", "devices", "freezer", "blkio"]
    .map((c) => join(CGROUP_ROOT, c, path))
    .filter((d) => existsSync(d));
}

/**
 * How many processes the OOM killer killed in cgroup `path` so far
 * (`oom_kill` of memory.events on v2, of memory.oom_control on v1), or
 * undefined when the kernel does not tell.
 */
export function oomKillCount(path: string): number | undefined {
  const file = cgroupV2()
    ? join(CGROUP_ROOT, path, "memory.events")
    : join(CGROUP_ROOT, "memory", path, "memory.oom_control");
  try {
    const m = /^oom_kill (\d+)$/m.exec(readFileSync(file, "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

const FREEZE_WAIT_MS = 10_000;

/**
 * Freezes every process of the cgroup `path` (an OCI cgroupsPath) with the
 * kernel's freezer (cgroup v2 `cgroup.freeze`, v1 `freezer.state`) and waits
 * until the kernel reports it frozen. Resolves with `thaw`, which callers
 * must run on every path (it never throws). A missing cgroup freezes nothing.
 */
export async function freezeCgroup(path: string): Promise<() => Promise<void>> {
  const unified = cgroupV2();
  const dir = unified ? join(CGROUP_ROOT, path) : join(CGROUP_ROOT, "freezer", path);
  const control = unified ? join(dir, "cgroup.freeze") : join(dir, "freezer.state");
  if (!existsSync(control)) return async () => {};
  const thaw = async () => {
    await writeFile(control, unified ? "0" : "THAWED").catch(() => undefined);
  };
  try {
    await writeFile(control, unified ? "1" : "FROZEN");
    const deadline = Date.now() + FREEZE_WAIT_MS;
    for (;;) {
      const frozen = unified
        ? /^frozen 1$/m.test(await readFile(join(dir, "cgroup.events"), "utf8"))
        : (await readFile(control, "utf8")).trim() === "FROZEN";
      if (frozen) return thaw;
      if (Date.now() > deadline) throw new Error(`cgroup ${path} did not freeze in time`);
      await sleep(2);
    }
  } catch (err) {
    await thaw();
    throw err;
  }
}
