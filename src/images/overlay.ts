import { constants } from "node:fs";
import { open } from "node:fs/promises";
import { detachMount } from "../linux/mount.ts";
import { mountInfo, unescapeMountField } from "../linux/mountinfo.ts";

// The primitives our mounts are made and detached with (./mounts.ts uses them from here).
export { detachMount, mountOverlay } from "../linux/mount.ts";

/**
 * The mount points (as the kernel reports them now, one character a byte) of
 * overlay mounts of this mount namespace whose options contain `needle` (our
 * upperdir option names the mount uniquely), innermost last.
 */
export async function findOverlayMounts(needle: string): Promise<string[]> {
  return (await mountInfo("self", "latin1"))
    .filter(
      (m) =>
        m.fsType === "overlay" &&
        m.superOptions.split(",").some((o) => unescapeMountField(o) === needle),
    )
    .map((m) => m.mountPoint)
    .filter((p) => p !== "");
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

/** Detaches our mount `id` wherever it is; true when it is gone afterwards. Never throws. */
export function detachOverlayFully(id: string): Promise<boolean> {
  return detachOverlay(id)
    .then(() => overlayMounted(id))
    .then(
      (still) => !still,
      () => false,
    );
}
