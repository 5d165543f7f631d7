import { runTool as run } from "../util/run-tool.ts";
import { mountsUnder } from "./mountinfo.ts";

/** Characters that would break an overlay option string or a mount argument. */
export const UNSAFE_MOUNT_PATH = /[,:\\\s]/;

/** The layers of an overlay mount. */
export interface OverlayLayers {
  /** Read-only lower directory. */
  lower: string;
  /** Writable upper directory, and its work directory (on the same filesystem). */
  upper: string;
  work: string;
  /**
   * The directory the layer paths are relative to (the kernel resolves them
   * against the mounting process's directory), which keeps commas and colons
   * of the paths above it out of the option string. Absent: they are absolute.
   */
  cwd?: string;
}

/**
 * Mounts an overlay of `layers` on `target`: a path, or a directory open as
 * that fd (named to mount(8) as /proc/self/fd/3, so the mount lands on
 * exactly the directory resolved, whatever happens to its path).
 */
export function mountOverlay(target: string | number, layers: OverlayLayers): Promise<void> {
  const paths = [layers.lower, layers.upper, layers.work];
  for (const p of typeof target === "string" ? [target, ...paths] : paths) {
    if (UNSAFE_MOUNT_PATH.test(p)) throw new Error(`path unusable for an overlay mount: ${p}`);
  }
  const opts = `lowerdir=${layers.lower},upperdir=${layers.upper},workdir=${layers.work}`;
  if (typeof target === "string") {
    return run("mount", ["-t", "overlay", "overlay", "-o", opts, target], cwdOf(layers));
  }
  return run(
    "mount",
    ["--no-canonicalize", "-t", "overlay", "overlay", "-o", opts, "/proc/self/fd/3"],
    { ...cwdOf(layers), fd: target },
  );
}

function cwdOf(layers: OverlayLayers): { cwd?: string } {
  return layers.cwd === undefined ? {} : { cwd: layers.cwd };
}

/**
 * Detaches the mount whose root directory is open as `fd` (lazy unmount:
 * it leaves the tree at once; processes with files open inside keep them
 * until they close them). Mounts below it go with it.
 */
export function detachMount(fd: number): Promise<void> {
  return run("umount", ["--no-canonicalize", "-l", "/proc/self/fd/3"], { fd });
}

/**
 * Makes the mount at `target` shared, so mounts made below it later propagate
 * to its copies in other mount namespaces (a container's, which runc makes slaves).
 */
export function makeShared(target: string): Promise<void> {
  return run("mount", ["--make-shared", target]);
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
