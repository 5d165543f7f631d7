import { spawn } from "node:child_process";
import { constants, existsSync } from "node:fs";
import { type FileHandle, lstat, open } from "node:fs/promises";

/**
 * Files this large or larger are let go by a child. Below it, freeing them in
 * the rename costs less than starting the child (5-13 ms, on the event loop).
 */
export const RELEASE_FROM = 64 * 1024 * 1024;

/** A file about to be replaced, held open so that its freeing happens outside the rename. */
export interface HeldFile {
  /**
   * Call once the file was replaced (renamed over): hands the descriptor to
   * a short-lived child process, closes this process's own, then lets the
   * child end, so that the child's close is the last and the kernel frees
   * the file there. Resolves once this process's descriptor is closed.
   * Never rejects; without a child (no `cat` to run) the file is freed in
   * this close, as the rename would have.
   */
  release(): Promise<void>;
  /** Call when the file was not replaced (the rename failed): closes the descriptor. */
  close(): Promise<void>;
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
 * target of a `taskrouter cp` download here, 66-298 ms while other writes
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
  return {
    release: () => releaseLater(file),
    close: () => file.close().catch(() => {}),
  };
}

/**
 * `cat` by absolute path: never looked up in PATH, where a file a copy just
 * wrote into the working directory could be found first.
 */
const CAT = ["/usr/bin/cat", "/bin/cat"].find((p) => existsSync(p));

async function releaseLater(file: FileHandle): Promise<void> {
  let child: ReturnType<typeof spawn> | undefined;
  if (CAT) {
    try {
      // The descriptor becomes cat's fd 3; cat reads its stdin until EOF, which comes only
      // after this process has closed its own copy below. Detached and unreferenced: this
      // process waits for neither its start nor its end.
      child = spawn(CAT, [], {
        stdio: ["pipe", "ignore", "ignore", file.fd],
        detached: true,
        env: {},
      });
      child.on("error", () => {}); // not run: the close below frees the file
      child.stdin?.on("error", () => {});
      child.unref();
    } catch {
      child = undefined;
    }
  }
  await file.close().catch(() => {});
  child?.stdin?.end();
}
