import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

const CGROUP_ROOT = "/sys/fs/cgroup";

let v2: boolean | undefined;

/** True on a unified (v2-only) cgroup hierarchy (read once: it does not change while we run). */
export function cgroupV2(): boolean {
  v2 ??= existsSync(join(CGROUP_ROOT, "cgroup.controllers"));
  return v2;
}

/** The controller list of the cgroup2 mount of a hybrid host. */
const HYBRID_V2_CONTROLLERS = join(CGROUP_ROOT, "unified", "cgroup.controllers");

/**
 * True on a hybrid host (v1 controllers, plus a cgroup2 mount at
 * /sys/fs/cgroup/unified) whose cgroup2 mount has controllers of its own:
 * crun 1.8 refuses to start any container there.
 */
export function hybridWithV2Controllers(): boolean {
  try {
    return readFileSync(HYBRID_V2_CONTROLLERS, "utf8").trim() !== "";
  } catch {
    return false;
  }
}

/**
 * The command prefix that runs `binary` with that controller list reading
 * empty, in a private mount namespace of its own (mount propagation left as
 * it is, so mounts made below a task's rootfs still reach it); crun then uses
 * the v1 controllers, as runc does. Nothing outside that namespace changes.
 */
export function hidingV2Controllers(binary: string): string[] {
  return [
    "unshare",
    "-m",
    "--propagation",
    "unchanged",
    "/bin/sh",
    "-c",
    `mount --bind /dev/null ${HYBRID_V2_CONTROLLERS} && exec "$0" "$@"`,
    binary,
  ];
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
