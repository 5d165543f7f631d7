import { closeSync, constants as fsc, fstatSync, lstatSync, openSync } from "node:fs";
import { FailedPreconditionError, InvalidArgumentError } from "../errors.ts";
import { checkMaxBytes, MAX, quote } from "../limits.ts";

/**
 * Throws InvalidArgument unless `sub` is a directory path relative to a
 * volume's root: not absolute, normalized (no `.` or `..` component, no
 * `//`, no trailing `/`), printable, within PATH_MAX and NAME_MAX. Returns
 * its components. `sub` comes from a client: this is the syntactic half of
 * keeping it inside the volume (openSubPath is the other).
 */
export function checkSubPath(sub: string): string[] {
  checkMaxBytes("sub_path", sub, MAX.path);
  const bad = (why: string) =>
    new InvalidArgumentError(`sub_path ${quote(sub, { ends: true })} ${why}`);
  if (sub.startsWith("/")) throw bad("must be relative to the volume's root");
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it refuses
  if (/[\u0000-\u001f\u007f]/.test(sub)) throw bad("must not contain control characters");
  const parts = sub.split("/");
  for (const c of parts) {
    if (c === "" || c === "." || c === "..") {
      throw bad("must be normalized (no '.', '..', '//' or trailing '/')");
    }
    if (Buffer.byteLength(c) > MAX.pathComponent) throw bad("has a component past NAME_MAX");
  }
  return parts;
}

/** An open directory inside a volume (openSubPath); `close` once its path was used. */
export interface OpenSubDir {
  /** A path naming exactly the directory opened, for any process of this machine while open. */
  readonly path: string;
  readonly ino: number;
  close(): void;
}

const DIR_FLAGS = fsc.O_RDONLY | fsc.O_DIRECTORY | fsc.O_NOFOLLOW;

/**
 * Opens directory `parts` (checkSubPath's) below `root` (a volume's
 * directory, the router's own) one component at a time, each looked up in
 * the directory opened before it through `/proc/self/fd/N/NAME` (openat
 * semantics) with O_NOFOLLOW: a symlink anywhere along the way is refused,
 * so whatever a task planted in the volume, nothing outside it is reached.
 * The result names the very directory opened (`/proc/<router pid>/fd/N`):
 * a task renaming or swapping components afterwards cannot redirect a
 * mount made from it. FailedPrecondition (naming `volume`) when a component
 * is missing, a symlink or not a directory; nothing stays open then.
 */
export function openSubPath(root: string, parts: readonly string[], volume: string): OpenSubDir {
  let fd = openSync(root, DIR_FLAGS);
  try {
    for (let i = 0; i < parts.length; i++) {
      const next = openAt(fd, parts[i] as string, () => parts.slice(0, i + 1).join("/"), volume);
      closeSync(fd);
      fd = next;
    }
    const ino = fstatSync(fd).ino;
    const open = fd;
    let closed = false;
    return {
      path: `/proc/${process.pid}/fd/${open}`,
      ino,
      close: () => {
        if (closed) return;
        closed = true;
        closeSync(open);
      },
    };
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

function openAt(dir: number, name: string, shown: () => string, volume: string): number {
  try {
    return openSync(`/proc/self/fd/${dir}/${name}`, DIR_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // O_DIRECTORY | O_NOFOLLOW on a symlink is ENOTDIR (or ELOOP): lstat tells which it was.
    const link = () => lstatSync(`/proc/self/fd/${dir}/${name}`).isSymbolicLink();
    const why =
      code === "ENOENT"
        ? "does not exist"
        : code === "ELOOP" || (code === "ENOTDIR" && link())
          ? "is a symbolic link (refused: it could lead out of the volume)"
          : code === "ENOTDIR"
            ? "is not a directory"
            : undefined;
    if (!why) throw err;
    throw new FailedPreconditionError(
      `sub_path ${quote(shown(), { ends: true })} ${why} in volume ${volume}`,
    );
  }
}
