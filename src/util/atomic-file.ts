import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { open, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/** A unique name for a temporary file or directory. */
export function tmpName(prefix: string): string {
  return `${prefix}-${process.pid}-${randomBytes(6).toString("hex")}`;
}

/** fsync of a directory, so renames and creations in it are durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export interface AtomicWriteOptions {
  /** false: no fsyncs (see writeFileAtomic); default true. */
  durable?: boolean;
  /** The file's mode; default 0644. */
  mode?: number;
  /** The temporary file's name starts with this (a store that sweeps stale ones knows it); default the file's name. */
  tmpPrefix?: string;
}

/**
 * Writes `data` to `file` atomically: a temporary file in `tmpDir` (same
 * filesystem), fsync, rename over `file`, fsync of the directory. A crash
 * leaves either the old file or the new one, never a part. `durable: false`
 * skips the fsyncs: still atomic for a crash of the process, but a machine
 * crash may keep the old content (for state that does not outlive a reboot,
 * or whose loss is harmless).
 */
export async function writeFileAtomic(
  file: string,
  data: Uint8Array | string,
  tmpDir: string,
  opts: AtomicWriteOptions = {},
): Promise<void> {
  const durable = opts.durable !== false;
  const tmp = join(tmpDir, tmpName(opts.tmpPrefix ?? basename(file)));
  try {
    const fh = await open(tmp, "wx", opts.mode ?? 0o644);
    try {
      await fh.writeFile(data);
      if (durable) await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  if (durable) await fsyncDir(dirname(file));
}
