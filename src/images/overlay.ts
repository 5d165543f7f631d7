import { constants } from "node:fs";
import { open, readFile } from "node:fs/promises";
import { runTool as run } from "../util/run-tool.ts";

/**
 * Mounts an overlay on the directory open as `targetFd`: `lower` read-only,
 * writes to `upper` (with `work`, on the same filesystem). The layer paths
 * are relative to `cwd` (the kernel resolves them against the mounting
 * process's directory), which keeps commas and colons of the data dir's path
 * out of the option string. The target is named as /proc/self/fd/3 so the
 * mount lands on exactly the directory resolved, whatever happens to its path.
 */
export function mountOverlay(
  targetFd: number,
  layers: { cwd: string; lower: string; upper: string; work: string },
): Promise<void> {
  for (const p of [layers.lower, layers.upper, layers.work]) {
    if (/[,:\\\s]/.test(p)) throw new Error(`overlay layer path ${p} has a reserved character`);
  }
  const opts = `lowerdir=${layers.lower},upperdir=${layers.upper},workdir=${layers.work}`;
  return run(
    "mount",
    ["--no-canonicalize", "-t", "overlay", "overlay", "-o", opts, "/proc/self/fd/3"],
    { cwd: layers.cwd, fd: targetFd },
  );
}

/**
 * Detaches the mount whose root directory is open as `fd` (lazy unmount:
 * it leaves the tree at once; processes with files open inside keep them
 * until they close them). Mounts below it go with it.
 */
export function detachMount(fd: number): Promise<void> {
  return run("umount", ["--no-canonicalize", "-l", "/proc/self/fd/3"], { fd });
}

/** Unescapes a mountinfo field (octal escapes such as \040 for a space). */
function unescapeField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/**
 * The mount points (as the kernel reports them now) of overlay mounts of
 * this mount namespace whose options contain `needle` (our upperdir option
 * names the mount uniquely), innermost last.
 */
export async function findOverlayMounts(needle: string): Promise<string[]> {
  const info = await readFile("/proc/self/mountinfo", "latin1");
  const out: string[] = [];
  for (const line of info.split("\n")) {
    const [pre, post] = line.split(" - ");
    if (!pre || !post) continue;
    const fields = post.split(" ");
    if (fields[0] !== "overlay") continue;
    const superOpts = fields[2] ?? "";
    if (!superOpts.split(",").some((o) => unescapeField(o) === needle)) continue;
    const mountPoint = pre.split(" ")[4];
    if (mountPoint) out.push(unescapeField(mountPoint));
  }
  return out;
}

/** The upperdir option that names our mount `id` (layer paths are relative to the store). */
function needleOf(id: string): string {
  return `upperdir=mounts/${id}/upper`;
}

/** Where our mount `id` is (found through /proc/self/mountinfo), and its root's device and inode. */
export async function overlayRoot(
  id: string,
): Promise<{ where: string; dev: number; ino: number }> {
  const [where] = await findOverlayMounts(needleOf(id));
  if (!where) throw new Error(`overlay ${id} is not mounted after mount(8) succeeded`);
  const fh = await open(Buffer.from(where, "latin1"), constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    const st = await fh.stat();
    return { where, dev: st.dev, ino: st.ino };
  } finally {
    await fh.close();
  }
}

/** Whether our mount `id` is still mounted somewhere. */
export async function overlayMounted(id: string): Promise<boolean> {
  return (await findOverlayMounts(needleOf(id))).length > 0;
}

/**
 * Detaches our mount `id` wherever the kernel has it now, checking first that
 * the directory there is the root of that very overlay (device `dev`, when known).
 */
export async function detachOverlay(id: string, dev?: number): Promise<void> {
  for (const where of (await findOverlayMounts(needleOf(id))).reverse()) {
    const fh = await open(
      Buffer.from(where, "latin1"),
      constants.O_RDONLY | constants.O_DIRECTORY,
    ).catch(() => undefined);
    if (!fh) continue;
    try {
      const st = await fh.stat();
      if (dev === undefined || dev === 0 || st.dev === dev) await detachMount(fh.fd);
    } finally {
      await fh.close();
    }
  }
}
