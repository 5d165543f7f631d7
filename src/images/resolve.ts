import { constants } from "node:fs";
import { type FileHandle, lstat, mkdir, open, readlink, rmdir } from "node:fs/promises";
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from "../errors.ts";
import { errCode } from "./fs-util.ts";
import { type BinPath, bin, fromBytes, show } from "./paths.ts";

/**
 * The filesystem of a task, as path resolution sees it.
 * - `root`: host path of the directory request paths are resolved in: the
 *   task's root (runc), or on the host runtime the task's own directory
 *   (`<data-dir>/tasks/<id>`: nothing outside it is ever resolved).
 * - `refuseSymlinks`: any symlink met on the way fails the call (host
 *   runtime: the path names exactly the directory used, never another one),
 *   and `root` must be a real path (no symlink in it at the time of the call);
 *   otherwise symlinks are followed with `root` as "/" (openat2
 *   RESOLVE_IN_ROOT semantics): absolute targets restart at `root`, `..` never
 *   climbs above it, so no symlink a task plants can lead outside it.
 * - `requestPrefix`: the request path of `root` (host runtime: the task's
 *   directory), for messages and records; absent: `root` is the task's `/`.
 */
export interface FsRoot {
  root: string;
  refuseSymlinks: boolean;
  requestPrefix?: BinPath;
}

/** The request path of `components` below `fsRoot.root`, for messages and records. */
export function requestPath(fsRoot: FsRoot, components: readonly BinPath[]): BinPath {
  return `${fsRoot.requestPrefix ?? ""}/${components.join("/")}`;
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
  /** How many directories this resolution created. */
  created: number;
  /**
   * Removes the directories this resolution created, deepest first, each
   * only while it is empty, through open handles of their parents (never by
   * a path a task could redirect). For a caller whose later step failed.
   */
  undoCreate(): Promise<void>;
  /** Closes `fh` and the handles kept for `undoCreate`. */
  close(): Promise<void>;
}

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
const MAX_LINKS = 40;

function fdChild(fh: FileHandle, name: BinPath): Buffer {
  return Buffer.concat([Buffer.from(`/proc/self/fd/${fh.fd}/`), bin(name)]);
}

/** Opens `fsRoot.root`; FailedPrecondition when it is gone or (refuseSymlinks) not a real path. */
async function openRoot(fsRoot: FsRoot): Promise<FileHandle> {
  const fh = await open(fsRoot.root, constants.O_RDONLY | constants.O_DIRECTORY).catch(
    (err: unknown) => {
      if (errCode(err) === "ENOENT" || errCode(err) === "ENOTDIR") {
        throw new FailedPreconditionError("the task's directory does not exist any more");
      }
      throw err;
    },
  );
  if (fsRoot.refuseSymlinks && (await readlink(`/proc/self/fd/${fh.fd}`)) !== fsRoot.root) {
    await fh.close();
    throw new FailedPreconditionError("the task's directory was moved or replaced by a symlink");
  }
  return fh;
}

/**
 * Resolves the components of a request path (see paths.parseRequestPath)
 * inside `fsRoot`, one component at a time through open directory handles
 * (each lookup is relative to the handle of its parent, so a rename or a
 * symlink swapped in elsewhere cannot redirect it). `create`: missing
 * directories are made (mode 0755); otherwise a missing one is NotFound.
 * A non-directory on the way is FailedPrecondition; a path that resolves to
 * the root itself is InvalidArgument. When it fails, the directories it
 * created are removed again. The caller calls `close()`.
 */
export async function resolveDir(
  fsRoot: FsRoot,
  components: readonly BinPath[],
  opts: { create: boolean; allowRoot?: boolean },
): Promise<ResolvedDir> {
  const stack: FileHandle[] = [await openRoot(fsRoot)];
  const queue = [...components];
  const seen: BinPath[] = []; // components walked so far, for messages
  const created: { parent: FileHandle; name: BinPath }[] = [];
  const kept = new Set<FileHandle>(); // parents of created directories, open until close()
  const release = async (fh: FileHandle) => {
    if (!kept.has(fh)) await fh.close();
  };
  const where = () => show(requestPath(fsRoot, seen));
  const undoCreate = async () => {
    for (const c of created.reverse()) await rmdir(fdChild(c.parent, c.name)).catch(() => {});
    created.length = 0;
  };
  const closeKept = async () => {
    for (const fh of kept) await fh.close();
    kept.clear();
  };
  let links = 0;
  let ok = false;
  try {
    while (queue.length > 0) {
      const name = queue.shift() as BinPath;
      if (name === "" || name === ".") continue;
      if (name === "..") {
        if (stack.length > 1) await release(stack.pop() as FileHandle);
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
        if (!opts.create) throw new NotFoundError(`${where()} does not exist`);
        const made = await mkdir(p, { mode: 0o755 }).then(
          () => true,
          (err: unknown) => {
            if (errCode(err) !== "EEXIST") throw err;
            return false;
          },
        );
        if (made) {
          created.push({ parent: top, name });
          kept.add(top);
        }
        st = await lstat(p);
      }
      if (st.isSymbolicLink()) {
        if (fsRoot.refuseSymlinks) {
          throw new InvalidArgumentError(
            `${where()} is a symlink: paths on the host runtime must not go through symlinks`,
          );
        }
        if (++links > MAX_LINKS) throw new InvalidArgumentError(`too many symlinks at ${where()}`);
        const target = fromBytes(await readlink(p, { encoding: "buffer" }));
        seen.pop();
        if (target.startsWith("/")) {
          while (stack.length > 1) await release(stack.pop() as FileHandle);
          seen.length = 0;
        }
        queue.unshift(...target.split("/").filter((s) => s !== ""));
        continue;
      }
      if (!st.isDirectory()) throw new FailedPreconditionError(`${where()} is not a directory`);
      stack.push(await open(p, DIR_FLAGS));
    }
    if (stack.length === 1 && !opts.allowRoot) {
      throw new InvalidArgumentError("path resolves to the root directory of the task");
    }
    // Still on the stack until it is returned: closed with the others if this throws.
    const fh = stack[stack.length - 1] as FileHandle;
    const fdPath = `/proc/self/fd/${fh.fd}`;
    const hostPath = await readlink(fdPath);
    stack.pop();
    ok = true;
    return {
      fh,
      fdPath,
      hostPath,
      created: created.length,
      undoCreate,
      close: async () => {
        kept.delete(fh);
        await fh.close();
        await closeKept();
      },
    };
  } catch (err) {
    await undoCreate();
    throw err;
  } finally {
    for (const fh of stack) await release(fh);
    if (!ok) await closeKept();
  }
}
