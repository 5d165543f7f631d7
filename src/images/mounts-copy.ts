import { chmod, lstat, readdir, rename, rm } from "node:fs/promises";
import { FailedPreconditionError, InvalidArgumentError } from "../errors.ts";
import { errCode } from "./fs-util.ts";
import type { ImageStore } from "./image-store.ts";
import type { Manifest } from "./manifest.ts";
import { type BinPath, bin, show } from "./paths.ts";
import { type FsRoot, resolveDir } from "./resolve.ts";
import type { FileWriter } from "./sealed-store.ts";
import { unpackTree } from "./unpack.ts";

/** Where a copy-mode "mount" lives: the directory `name` in `parent`, what it hid beside it. */
export interface CopyPlacement {
  /** Host path of the parent directory (binary string). */
  parent: BinPath;
  name: BinPath;
  /** The hidden original, renamed to this name in `parent`; "" when there was none. */
  hidden: BinPath;
  dev: number;
  ino: number;
}

function at(dir: BinPath | Buffer, name: BinPath): Buffer {
  const d = Buffer.isBuffer(dir) ? dir : bin(dir);
  return Buffer.concat([d, Buffer.from("/"), bin(name)]);
}

/**
 * Copy mode (a router that is not root cannot mount overlays): the tree of
 * `manifest` is written at the path as a plain directory. What was there is
 * hidden by renaming it beside itself (`.NAME.taskrouter-hidden-<id>`), never
 * deleted; `copyOut` puts it back. Writes go straight into the copy; the
 * image never changes. Costs a copy of the image per mount. `writeFile`
 * writes file contents (a sealed image's decrypts them).
 */
export async function copyIn(
  store: ImageStore,
  fsRoot: FsRoot,
  components: readonly BinPath[],
  manifest: Manifest,
  id: string,
  writeFile?: FileWriter,
): Promise<CopyPlacement> {
  const name = components[components.length - 1] as BinPath;
  const parent = await resolveDir(fsRoot, components.slice(0, -1), {
    create: true,
    allowRoot: true,
  });
  try {
    const parentFd = Buffer.from(parent.fdPath);
    const target = at(parentFd, name);
    const st = await lstat(target).catch((err: unknown) => {
      if (errCode(err) === "ENOENT") return undefined;
      throw err;
    });
    if (st?.isSymbolicLink()) {
      throw new InvalidArgumentError(
        `${show(name)} is a symlink: mount paths must not be symlinks`,
      );
    }
    if (st && !st.isDirectory())
      throw new FailedPreconditionError(`${show(name)} is not a directory`);
    const hidden = st ? `.${name}.taskrouter-hidden-${id}` : "";
    if (hidden) await rename(target, at(parentFd, hidden));
    try {
      await unpackTree(manifest, store, target, undefined, writeFile);
      const made = await lstat(target);
      return {
        parent: Buffer.from(parent.hostPath).toString("latin1"),
        name,
        hidden,
        dev: made.dev,
        ino: made.ino,
      };
    } catch (err) {
      await removeTree(target);
      if (hidden) await rename(at(parentFd, hidden), target);
      throw err;
    }
  } catch (err) {
    await parent.undoCreate(); // the directories made on the way go too
    throw err;
  } finally {
    await parent.close();
  }
}

/** Removes a copy-mode mount and brings back what it hid. */
export async function copyOut(p: CopyPlacement): Promise<void> {
  const target = at(p.parent, p.name);
  const st = await lstat(target).catch(() => undefined);
  if (st && st.dev === p.dev && st.ino === p.ino) await removeTree(target);
  if (p.hidden) await rename(at(p.parent, p.hidden), target).catch(() => undefined);
}

/** rm -rf that also works on directories whose mode forbids writing (not root). */
async function removeTree(path: Buffer): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return;
  if (st.isDirectory()) {
    await chmod(path, 0o700).catch(() => undefined);
    for (const n of (await readdir(path, { encoding: "buffer" })) as Buffer[]) {
      await removeTree(Buffer.concat([path, Buffer.from("/"), n]));
    }
  }
  await rm(path, { recursive: true, force: true });
}
