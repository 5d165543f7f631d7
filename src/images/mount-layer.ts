import { constants } from "node:fs";
import { mkdir, open, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { runTool } from "../util/run-tool.ts";
import type { ImageStore } from "./image-store.ts";
import type { Manifest } from "./manifest.ts";
import { detachMount } from "./overlay.ts";
import type { FileWriter } from "./sealed-store.ts";
import { unpackTree } from "./unpack.ts";

/**
 * The layer directory of a mount of a sealed image (`<images>/mounts/<id>`)
 * is a tmpfs of its own: the image is decrypted into `lower/` there, and
 * the mount's upper and work directories (and its record, mount.json,
 * which survives a router restart there but not a reboot, like the mount)
 * are there too, so nothing of the
 * decrypted tree, nor what the task writes into the mount, reaches the disk
 * (except through swap). It costs memory (the tree, plus the writes) and a
 * decryption of the whole image per mount; unmounting frees it.
 */
export async function decryptLayer(
  store: ImageStore,
  base: string,
  manifest: Manifest,
  writeFile: FileWriter,
): Promise<void> {
  await mkdir(base, { mode: 0o700 });
  await runTool("mount", [
    "--no-canonicalize",
    "-t",
    "tmpfs",
    "-o",
    "mode=0700",
    "taskrouter-sealed",
    base,
  ]);
  await unpackTree(manifest, store, join(base, "lower"), undefined, writeFile);
}

/**
 * Removes a mount's layer directory; a tmpfs mounted on it (a sealed image's
 * layer) is detached first, found by its device differing from its parent's.
 * Never throws for a directory already gone.
 */
export async function removeLayerDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY).catch(() => undefined);
  if (fh) {
    try {
      const [st, parent] = [await fh.stat(), await stat(dirname(dir))];
      if (st.dev !== parent.dev) await detachMount(fh.fd);
    } finally {
      await fh.close();
    }
  }
  await rm(dir, { recursive: true, force: true });
}
