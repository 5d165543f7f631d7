import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "./fs-util.ts";
import type { CopyPlacement } from "./mounts-copy.ts";
import type { BinPath } from "./paths.ts";
import { type FsRoot, requestPath } from "./resolve.ts";

/** A mount made by TaskMountDirectory, persisted in `<images>/mounts/<id>/mount.json`. */
export interface MountRecord {
  id: string;
  taskId: string;
  /** "" for an empty directory. */
  imageId: string;
  /** The request path (bytes, base64), for listings and messages. */
  pathB64: string;
  /** Device and inode of the mounted root: a directory is this mount's root iff both match. */
  dev: number;
  ino: number;
  createdAtMs: number;
  /** Copy mode (no overlay): where the copy is and what it hid. */
  copy?: CopyPlacement;
  /** A sealed image, decrypted into a tmpfs layer (mount-layer.ts): no incremental snapshots. */
  sealed?: boolean;
}

/** A new record (not saved yet) of a mount of `taskId` at `components`. */
export function newRecord(
  id: string,
  taskId: string,
  imageId: string,
  path: { fsRoot: FsRoot; components: readonly BinPath[] },
  root: { dev: number; ino: number },
): MountRecord {
  const p = requestPath(path.fsRoot, path.components);
  const pathB64 = Buffer.from(p, "latin1").toString("base64");
  return { id, taskId, imageId, pathB64, dev: root.dev, ino: root.ino, createdAtMs: Date.now() };
}

/** Writes `rec` into `<mountsDir>/<id>/mount.json` (atomically, through `tmpDir`). */
export async function saveRecord(mountsDir: string, rec: MountRecord, tmpDir: string) {
  // Mounts do not outlive a reboot, and a router crash keeps the page cache: no fsync.
  // A sealed image's layer is a tmpfs: its record is staged there (a rename cannot cross).
  const dir = join(mountsDir, rec.id);
  await writeFileAtomic(
    join(dir, "mount.json"),
    Buffer.from(JSON.stringify(rec)),
    rec.sealed ? dir : tmpDir,
    { durable: false },
  );
}

/** The record of mount `id`, or undefined when it cannot be read. */
export function readRecord(mountsDir: string, id: string): Promise<MountRecord | undefined> {
  return readFile(join(mountsDir, id, "mount.json"), "utf8")
    .then((s) => JSON.parse(s) as MountRecord)
    .catch(() => undefined);
}
