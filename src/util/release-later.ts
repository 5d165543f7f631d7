import { spawn } from "node:child_process";
import { constants } from "node:fs";
import { type FileHandle, lstat, open } from "node:fs/promises";

/** Files this large or larger are let go by a child; below it freeing them costs little. */
export const RELEASE_FROM = 8 * 1024 * 1024;

/** A file about to be replaced, held open so that its freeing happens outside the rename. */
export interface HeldFile {
  /**
   * Call once the file was replaced (renamed over): hands the last
   * descriptor to a short-lived child process, which the kernel frees the
   * file in when it exits, and closes this process's own. Never throws;
   * without a child (no `true` to run) the file is freed in the close here,
   * as the rename would have.
   */
  release(): Promise<void>;
}

/**
 * Holds the file at `path` when a rename over it would free it and that is
 * worth moving off the caller's path: a regular file of RELEASE_FROM bytes or
 * more, that name its only one. Opened read-only (O_NOFOLLOW, O_NONBLOCK: a
 * lease holder is not waited for) and checked to be the file lstat saw; else,
 * or when it cannot be opened, undefined (the rename frees it, as before).
 *
 * Why (docs/DECISIONS.md, "A replaced file let go off the critical path"): a
 * rename over a file drops its last name, and the kernel frees it inside
 * rename(2), waiting for any writeback of its pages: ~50 ms for the 256 MiB
 * target of a `taskrouter cp` download here, 66-236 ms while other writes
 * were being flushed.
 */
export async function holdReplaced(path: string): Promise<HeldFile | undefined> {
  const st = await lstat(path).catch(() => undefined);
  if (!st?.isFile() || st.nlink !== 1 || st.size < RELEASE_FROM) return undefined;
  let file: FileHandle;
  try {
    file = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  const now = await file.stat().catch(() => undefined);
  if (now?.ino !== st.ino || now.dev !== st.dev) {
    await file.close().catch(() => {});
    return undefined;
  }
  return { release: () => releaseLater(file) };
}

async function releaseLater(file: FileHandle): Promise<void> {
  try {
    // `true` inherits the descriptor as its fd 3 and exits at once: its exit closes the last
    // one. Detached and unreferenced: this process waits for neither its start nor its end.
    const child = spawn("true", [], {
      stdio: ["ignore", "ignore", "ignore", file.fd],
      detached: true,
    });
    child.on("error", () => {}); // not run: the close below frees the file
    child.unref();
  } catch {
    // as above
  }
  await file.close().catch(() => {});
}
