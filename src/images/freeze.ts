import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

const CGROUP_ROOT = "/sys/fs/cgroup";
const FREEZE_WAIT_MS = 10_000;

/**
 * Freezes every process of the cgroup `path` (an OCI cgroupsPath) with the
 * kernel's freezer (cgroup v2 `cgroup.freeze`, v1 `freezer.state`) and waits
 * until the kernel reports it frozen. Resolves with `thaw`, which callers
 * must run on every path (it never throws). A missing cgroup freezes nothing.
 */
export async function freezeCgroup(path: string): Promise<() => Promise<void>> {
  const v2 = existsSync(join(CGROUP_ROOT, "cgroup.controllers"));
  const dir = v2 ? join(CGROUP_ROOT, path) : join(CGROUP_ROOT, "freezer", path);
  const control = v2 ? join(dir, "cgroup.freeze") : join(dir, "freezer.state");
  if (!existsSync(control)) return async () => {};
  const thaw = async () => {
    await writeFile(control, v2 ? "0" : "THAWED").catch(() => undefined);
  };
  try {
    await writeFile(control, v2 ? "1" : "FROZEN");
    const deadline = Date.now() + FREEZE_WAIT_MS;
    for (;;) {
      const frozen = v2
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
