import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { open, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { runTool } from "../util/run-tool.ts";

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
  data: Uint8Array,
  tmpDir: string,
  opts: { durable?: boolean } = {},
): Promise<void> {
  const durable = opts.durable !== false;
  const tmp = join(tmpDir, tmpName(basename(file)));
  try {
    const fh = await open(tmp, "w", 0o644);
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

/**
 * Flushes every dirty page of the filesystem holding `path` to disk (syncfs
 * through coreutils `sync -f`): one call instead of an fsync per file.
 * Falls back to `sync` (every filesystem) where `sync -f` is missing.
 */
export function syncFilesystem(path: string): Promise<void> {
  return runTool("sync", ["-f", path]).catch(() => runTool("sync", []));
}

/**
 * A bounded pool: `run` starts `fn` when fewer than `limit` are running and
 * resolves with its result. Used to overlap file I/O without unbounded fds.
 */
export class Pool {
  private running = 0;
  private readonly queue: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) {
      await new Promise<void>((resolve) => this.queue.push(resolve));
    } else {
      this.running++;
    }
    try {
      return await fn();
    } finally {
      const next = this.queue.shift();
      if (next) next();
      else this.running--;
    }
  }
}

/** The errno code of an fs error, or undefined. */
export function errCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}
