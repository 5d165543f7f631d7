import { runTool } from "../util/run-tool.ts";

export { fsyncDir, tmpName, writeFileAtomic } from "../util/atomic-file.ts";

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
