import { randomBytes } from "node:crypto";
import {
  close,
  closeSync,
  constants as fsc,
  fstat,
  fstatSync,
  lstatSync,
  open,
  openSync,
  readSync,
  renameSync,
  type Stats,
  unlinkSync,
} from "node:fs";
import { type FileHandle, open as openHandle } from "node:fs/promises";
import { basename } from "node:path";
import { FailedPreconditionError } from "../../errors.ts";

/**
 * Every open of a file in a task agent's exec directory (`<bundle>/agent`,
 * the host runtime's `<task>/agent`) goes through here. A process of the
 * task can control the agent (a `runtime_debug` exec may ptrace it) and so
 * put anything there: symlinks to this machine's files, FIFOs, device nodes,
 * hard links to the directory's own files, files of any size. The router
 * runs as root, so (docs/DECISIONS.md, "The exec directory is hostile input
 * (router side)"):
 * - a name is first opened with O_PATH|O_NOFOLLOW (opens nothing: a FIFO
 *   does not block, a device is not opened, a symlink is the link itself),
 *   fstat'ed, and only a regular file (a socket for agent.sock) is reopened,
 *   through `/proc/self/fd/N`, with the real flags: the inode checked is the
 *   inode opened, whatever is renamed in between;
 * - a file the router creates is created with O_CREAT|O_EXCL|O_NOFOLLOW, or
 *   opened as above when it exists already;
 * - a read of a whole file stops at a fixed maximum.
 * Anything else is ExecDirFileError (FAILED_PRECONDITION: the task broke its
 * own exec files; asking again does not help).
 */

/** Linux's O_PATH (Node has no constant for it; it passes the flags through). */
export const O_PATH = 0o10000000;
/** The probe of a name (libuv adds O_CLOEXEC to every open). */
const PROBE = O_PATH | fsc.O_NOFOLLOW;
/** Flags that only mean something when a name is resolved (never passed to the reopen). */
const NAME_ONLY = fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW | fsc.O_TRUNC;

/** A file of the exec directory is not what the router reads or writes there. */
export class ExecDirFileError extends FailedPreconditionError {}

function kindOf(st: Stats): string {
  if (st.isSymbolicLink()) return "a symlink";
  if (st.isFIFO()) return "a FIFO";
  if (st.isCharacterDevice() || st.isBlockDevice()) return "a device node";
  if (st.isDirectory()) return "a directory";
  if (st.isSocket()) return "a socket";
  if (st.isFile()) return "a regular file";
  return "not a regular file";
}

function refused(path: string, st: Stats, want: string): ExecDirFileError {
  return new ExecDirFileError(
    `the task's exec file ${basename(path)} is ${kindOf(st)}, not ${want} (a process of the task changed its exec files)`,
  );
}

/** `fd` (an O_PATH descriptor of `path`) is a regular file, else ExecDirFileError; closes it on refusal. */
function checkRegular(fd: number, path: string): void {
  const st = fstatSync(fd);
  if (st.isFile()) return;
  closeSync(fd);
  throw refused(path, st, "a regular file");
}

/**
 * Opens regular file `path` with `flags` (O_RDONLY, O_RDWR, O_WRONLY|O_APPEND, ...),
 * never through a symlink and never anything else than a regular file.
 * @throws ExecDirFileError for anything else; the errno error (ENOENT...) when it cannot be opened
 */
export function openRegularSync(path: string, flags: number): number {
  const p = openSync(path, PROBE);
  checkRegular(p, path);
  try {
    return openSync(`/proc/self/fd/${p}`, flags & ~NAME_ONLY);
  } finally {
    closeSync(p);
  }
}

/** fs.open as a promise of the descriptor. */
function openFd(path: string, flags: number, mode = 0o600): Promise<number> {
  return new Promise((resolve, reject) =>
    open(path, flags, mode, (err, fd) => (err ? reject(err) : resolve(fd))),
  );
}

/** openRegularSync, off the event loop (the probe never blocks, nor does the reopen of a file). */
export async function openRegularFd(path: string, flags: number): Promise<number> {
  const p = await openFd(path, PROBE);
  try {
    const st = await new Promise<Stats>((resolve, reject) =>
      fstat(p, (err, s) => (err ? reject(err) : resolve(s))),
    );
    if (!st.isFile()) throw refused(path, st, "a regular file");
    return await openFd(`/proc/self/fd/${p}`, flags & ~NAME_ONLY);
  } finally {
    close(p, () => {});
  }
}

/** openRegularFd as a FileHandle. */
export async function openRegular(path: string, flags: number): Promise<FileHandle> {
  const p = await openHandle(path, PROBE);
  try {
    const st = await p.stat();
    if (!st.isFile()) throw refused(path, st, "a regular file");
    return await openHandle(`/proc/self/fd/${p.fd}`, flags & ~NAME_ONLY);
  } finally {
    await p.close();
  }
}

/**
 * A file the router creates (`flags` with the access mode, e.g. O_RDWR):
 * made with O_CREAT|O_EXCL|O_NOFOLLOW, or, when the name exists already,
 * opened as openRegularFd opens it (a regular file only).
 */
export async function createOrOpenFd(path: string, flags: number, mode = 0o600): Promise<number> {
  return (await createNewFd(path, flags, mode)) ?? openRegularFd(path, flags);
}

/**
 * A new file at `path` (O_CREAT|O_EXCL|O_NOFOLLOW with the access mode of
 * `flags`); undefined when the name exists already, whatever it is.
 */
export function createNewFd(
  path: string,
  flags: number,
  mode = 0o600,
): Promise<number | undefined> {
  return openFd(path, (flags & ~NAME_ONLY) | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, mode).catch(
    (err: NodeJS.ErrnoException) => {
      if (err.code === "EEXIST") return undefined;
      throw err;
    },
  );
}

/** createOrOpenFd, synchronous. */
export function createOrOpenSync(path: string, flags: number, mode = 0o600): number {
  try {
    return openSync(path, (flags & ~NAME_ONLY) | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, mode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  return openRegularSync(path, flags);
}

/**
 * The whole of regular file `path`, at most `max` bytes; undefined when it
 * does not exist.
 * @throws ExecDirFileError when it is not a regular file or holds more than `max` bytes
 */
export function readBounded(path: string, max: number): Buffer | undefined {
  let fd: number;
  try {
    fd = openRegularSync(path, fsc.O_RDONLY);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  try {
    // One byte more than allowed: reading it says the file is too large (it may grow meanwhile).
    let grown = Buffer.allocUnsafe(Math.min(max + 1, Math.max(fstatSync(fd).size + 1, 4096)));
    let len = 0;
    for (;;) {
      if (len === grown.length) {
        if (grown.length > max) break;
        const next = Buffer.allocUnsafe(Math.min(max + 1, grown.length * 2));
        grown.copy(next, 0, 0, len);
        grown = next;
      }
      const n = readSync(fd, grown, len, grown.length - len, len);
      if (n === 0) break;
      len += n;
    }
    if (len > max) {
      throw new ExecDirFileError(
        `the task's exec file ${basename(path)} holds more than ${max} bytes (a process of the task changed its exec files)`,
      );
    }
    return grown.subarray(0, len);
  } finally {
    closeSync(fd);
  }
}

/** The size of regular file `path` (no symlink followed); 0 when absent or not a regular file. */
export function regularSize(path: string): number {
  try {
    const st = lstatSync(path);
    return st.isFile() ? st.size : 0;
  } catch {
    return 0;
  }
}

/**
 * An O_PATH descriptor of socket `path` (no symlink followed) to connect
 * through `/proc/self/fd/N`: the socket checked is the socket connected to.
 * The caller closes it.
 * @throws ExecDirFileError when it is not a socket; the errno error when absent
 */
export function socketPath(path: string): number {
  const fd = openSync(path, PROBE);
  const st = fstatSync(fd);
  if (st.isSocket()) return fd;
  closeSync(fd);
  throw refused(path, st, "a socket");
}

/**
 * Removes name `path` whatever it is (unlink never follows a symlink); absent
 * is fine. A directory (which unlink cannot remove) is renamed aside to
 * `<path>.planted-<random>`, never walked: the task could swap its entries
 * for links meanwhile. It goes with the exec directory.
 */
export function unlinkName(path: string): void {
  try {
    unlinkSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return;
    if (code !== "EISDIR" && code !== "EPERM") throw err;
    renameSync(path, `${path}.planted-${randomBytes(6).toString("hex")}`);
  }
}
