import { constants } from "node:fs";
import { type FileHandle, lstat, mkdir, open, readlink } from "node:fs/promises";
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from "../errors.ts";
import { errCode } from "./fs-util.ts";
import { type BinPath, bin, fromBytes, show } from "./paths.ts";

/**
 * The filesystem of a task, as path resolution sees it.
 * - `root`: host path of the task's root directory ("/" on the host runtime).
 * - `refuseSymlinks`: any symlink met on the way fails the call (host
 *   runtime: the path names exactly the directory used, never another one);
 *   otherwise symlinks are followed with `root` as "/" (openat2
 *   RESOLVE_IN_ROOT semantics): absolute targets restart at `root`, `..` never
 *   climbs above it, so no symlink a task plants can lead outside it.
 */
export interface FsRoot {
  root: string;
  refuseSymlinks: boolean;
}

/**
 * Where mounts go: the task's root, and for runtimes whose tasks do not see
 * mounts made below their root on the host, how to place them there.
 */
export interface MountRoot extends FsRoot {
  /** Makes the new mount at host path `hostPath` (root `root`) visible in the task. */
  exposeMount?(hostPath: string, root: { dev: number; ino: number }): Promise<void>;
  /** Removes from the task what is left of our detached mount of device `dev`. */
  hideMount?(dev: number): Promise<void>;
}

/** A directory resolved inside a task: an open handle (the identity) and its host path. */
export interface ResolvedDir {
  fh: FileHandle;
  /** `/proc/self/fd/<n>`: a path that names exactly this directory while `fh` is open. */
  fdPath: string;
  /** The host path the kernel reports for it (informational; may change later). */
  hostPath: string;
  /** Host paths of the directories this resolution created (outermost first). */
  created: string[];
}

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
const MAX_LINKS = 40;

function fdChild(fh: FileHandle, name: BinPath): Buffer {
  return Buffer.concat([Buffer.from(`/proc/self/fd/${fh.fd}/`), bin(name)]);
}

/**
 * Resolves the components of a request path (see paths.parseRequestPath)
 * inside `fsRoot`, one component at a time through open directory handles
 * (each lookup is relative to the handle of its parent, so a rename or a
 * symlink swapped in elsewhere cannot redirect it). `create`: missing
 * directories are made (mode 0755); otherwise a missing one is NotFound.
 * A non-directory on the way is FailedPrecondition; a path that resolves to
 * the root itself is InvalidArgument. The caller closes `fh`.
 */
export async function resolveDir(
  fsRoot: FsRoot,
  components: readonly BinPath[],
  opts: { create: boolean; allowRoot?: boolean },
): Promise<ResolvedDir> {
  const stack: FileHandle[] = [await open(fsRoot.root, constants.O_RDONLY | constants.O_DIRECTORY)];
  const queue = [...components];
  const seen: BinPath[] = []; // components walked so far, for messages
  const created: string[] = [];
  let links = 0;
  try {
    while (queue.length > 0) {
      const name = queue.shift() as BinPath;
      if (name === "" || name === ".") continue;
      if (name === "..") {
        if (stack.length > 1) await (stack.pop() as FileHandle).close();
        seen.pop();
        continue;
      }
      seen.push(name);
      const top = stack[stack.length - 1] as FileHandle;
      const p = fdChild(top, name);
      let st = await lstat(p).catch((err: unknown) => {
        if (errCode(err) === "ENOENT") return undefined;
        throw err;
      });
      if (!st) {
        const where = show(`/${seen.join("/")}`);
        if (!opts.create) throw new NotFoundError(`${where} does not exist`);
        await mkdir(p, { mode: 0o755 }).catch((err: unknown) => {
          if (errCode(err) !== "EEXIST") throw err;
        });
        created.push(await readlink(`/proc/self/fd/${top.fd}`).then((d) => `${d}/${name}`));
        st = await lstat(p);
      }
      if (st.isSymbolicLink()) {
        const where = show(`/${seen.join("/")}`);
        if (fsRoot.refuseSymlinks) {
          throw new InvalidArgumentError(
            `${where} is a symlink: paths on the host runtime must not go through symlinks`,
          );
        }
        if (++links > MAX_LINKS) throw new InvalidArgumentError(`too many symlinks at ${where}`);
        const target = fromBytes(await readlink(p, { encoding: "buffer" }));
        seen.pop();
        if (target.startsWith("/")) {
          while (stack.length > 1) await (stack.pop() as FileHandle).close();
          seen.length = 0;
        }
        queue.unshift(...target.split("/").filter((s) => s !== ""));
        continue;
      }
      if (!st.isDirectory()) {
        throw new FailedPreconditionError(`${show(`/${seen.join("/")}`)} is not a directory`);
      }
      stack.push(await open(p, DIR_FLAGS));
    }
    if (stack.length === 1 && !opts.allowRoot) {
      throw new InvalidArgumentError("path resolves to the root directory of the task");
    }
    const fh = stack.pop() as FileHandle;
    const fdPath = `/proc/self/fd/${fh.fd}`;
    return { fh, fdPath, hostPath: await readlink(fdPath), created };
  } finally {
    for (const fh of stack) await fh.close();
  }
}
