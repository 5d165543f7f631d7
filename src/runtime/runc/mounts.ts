import { readFile } from "node:fs/promises";
import { runTool as run } from "../../util/run-tool.ts";

/** One line of /proc/self/mountinfo, the fields we use. */
export interface MountInfo {
  /** The device of the mount's filesystem, `major:minor` (as st_dev shows it). */
  device: string;
  mountPoint: string;
}

/** Decodes the octal escapes (\040 for a space...) of a mountinfo path. */
function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) =>
    String.fromCharCode(Number.parseInt(oct, 8)),
  );
}

/**
 * The mounts of the router's mount namespace, or with `pid` those of that
 * process's (paths as seen from its root), in mount order.
 */
export async function mountInfo(pid: number | "self" = "self"): Promise<MountInfo[]> {
  const text = await readFile(`/proc/${pid}/mountinfo`, "utf8");
  const out: MountInfo[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const f = line.split(" ");
    if (f.indexOf("-") < 6) continue;
    out.push({
      device: f[2] ?? "",
      mountPoint: unescapeMountPath(f[4] ?? ""),
    });
  }
  return out;
}

/** The `major:minor` of a st_dev value (glibc's gnu_dev_major/minor). */
export function deviceName(dev: number | bigint): string {
  const d = BigInt(dev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/** Mount points at or below `dir`, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  const points = (await mountInfo())
    .map((m) => m.mountPoint)
    .filter((p) => p === dir || p.startsWith(prefix));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/** Characters that would break an overlay option string or a mount argument. */
export const UNSAFE_MOUNT_PATH = /[,:\\\s]/;

/** Mounts an overlay at `target`: read-only `lower`, writable `upper` (with its `work` dir). */
export async function mountOverlay(
  target: string,
  lower: string,
  upper: string,
  work: string,
): Promise<void> {
  for (const p of [target, lower, upper, work]) {
    if (UNSAFE_MOUNT_PATH.test(p)) throw new Error(`path unusable for an overlay mount: ${p}`);
  }
  await run("mount", [
    "-t",
    "overlay",
    "overlay",
    "-o",
    `lowerdir=${lower},upperdir=${upper},workdir=${work}`,
    target,
  ]);
}

/**
 * Makes the mount at `target` shared, so mounts made below it later propagate
 * to its copies in the task's mount namespace (which runc makes slaves).
 */
export async function makeShared(target: string): Promise<void> {
  await run("mount", ["--make-shared", target]);
}

/**
 * Unmounts everything at or below `dir` (deepest first), lazily when a mount
 * is busy. Throws when something stays mounted.
 */
export async function unmountAll(dir: string): Promise<void> {
  // Several passes: a mount point can hold stacked mounts.
  for (let pass = 0; pass < 5; pass++) {
    const points = await mountsUnder(dir);
    if (points.length === 0) return;
    for (const p of points) {
      await run("umount", [p]).catch(() => run("umount", ["-l", p]).catch(() => undefined));
    }
  }
  const left = await mountsUnder(dir);
  if (left.length > 0) throw new Error(`still mounted under ${dir}: ${left.join(", ")}`);
}
