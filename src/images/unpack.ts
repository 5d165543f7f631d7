import { constants } from "node:fs";
import {
  chmod,
  copyFile,
  lchown,
  lutimes,
  mkdir,
  rename,
  rm,
  stat,
  symlink,
} from "node:fs/promises";
import { join } from "node:path";
import { throwIfAborted } from "../errors.ts";
import { errCode, Pool, syncFilesystem, tmpName } from "./fs-util.ts";
import type { ImageStore } from "./image-store.ts";
import type { Entry, Manifest } from "./manifest.ts";
import { bin } from "./paths.ts";
import type { FileWriter } from "./sealed-store.ts";

/** Whether this process may set file owners (root). */
export const CAN_CHOWN = process.getuid?.() === 0;

/**
 * The seconds to give fs.utimes for an image mtime (a whole microsecond).
 * libuv truncates what it is given to the microsecond, and a double near
 * 2e9 s is only exact to ~0.2 µs: aim at the middle of the microsecond so the
 * file gets exactly the image's value.
 */
export function timeOf(ns: bigint): number {
  return (Number(ns / 1000n) + 0.5) / 1e6;
}

/**
 * Writes the tree of `manifest` at `dest` (which must not exist, or be an
 * empty directory): directories, files (copied from their blobs, as reflinks
 * where the filesystem can), symlinks, with modes, mtimes and, when running
 * as root, owners. Parents are written before children; directory modes and
 * times are set last so they stick. `writeFile` writes a file's content
 * (a sealed image's decrypts it); by default its plain blob is copied.
 */
export async function unpackTree(
  manifest: Manifest,
  store: ImageStore,
  dest: string | Buffer,
  signal?: AbortSignal,
  writeFile?: FileWriter,
): Promise<void> {
  const root = Buffer.isBuffer(dest) ? dest : Buffer.from(dest);
  const abs = (e: Entry) =>
    e.path === "" ? root : Buffer.concat([root, Buffer.from("/"), bin(e.path)]);
  const pool = new Pool(8);
  const jobs: Promise<void>[] = [];
  const dirs: Entry[] = [];
  for (const e of manifest.entries) {
    throwIfAborted(signal);
    const p = abs(e);
    if (e.type === "dir") {
      if (e.path === "") await mkdir(p, { recursive: true, mode: 0o700 });
      else await mkdir(p, { mode: 0o700 });
      dirs.push(e);
    } else if (e.type === "symlink") {
      await symlink(bin(e.target ?? ""), p);
      if (CAN_CHOWN) await lchown(p, e.uid, e.gid);
      await lutimes(p, timeOf(e.mtimeNs), timeOf(e.mtimeNs));
    } else {
      jobs.push(
        pool.run(async () => {
          if (writeFile) await writeFile(e, p);
          else await copyFile(store.blobs.path(e.digest ?? ""), p, constants.COPYFILE_FICLONE);
          await setAttrs(p, e);
        }),
      );
      if (jobs.length >= 256) await Promise.all(jobs.splice(0));
    }
  }
  await Promise.all(jobs);
  for (const e of dirs.reverse()) await setAttrs(abs(e), e);
}

/** Gives `p` the owner (when we may), mode and times of `e`. */
export async function setAttrs(
  p: string | Buffer,
  e: { uid: number; gid: number; mode: number; mtimeNs: bigint },
): Promise<void> {
  if (CAN_CHOWN) await lchown(p, e.uid, e.gid);
  await chmod(p, e.mode);
  await lutimes(p, timeOf(e.mtimeNs), timeOf(e.mtimeNs));
}

const inflight = new Map<string, Promise<string>>();

/**
 * The directory holding image `id` unpacked (`<images>/unpacked/<id>`),
 * unpacking it on first use: into a temporary directory, synced, then
 * renamed into place, so the cache never holds a partial tree. Later calls
 * cost one stat. The caller must keep the image alive (`store.acquire`)
 * while it uses the directory; it must never write into it.
 */
export async function ensureUnpacked(store: ImageStore, id: string): Promise<string> {
  const dir = join(store.unpackedDir, id);
  if (
    await stat(dir).then(
      () => true,
      () => false,
    )
  )
    return dir;
  let p = inflight.get(dir);
  if (!p) {
    p = store.lock
      .shared(async () => {
        if (
          await stat(dir).then(
            () => true,
            () => false,
          )
        )
          return dir;
        const manifest = await store.manifest(id);
        const tmp = join(store.tmpDir, tmpName("unpack"));
        try {
          await unpackTree(manifest, store, tmp);
          await syncFilesystem(tmp);
          await rename(tmp, dir);
        } catch (err) {
          await rm(tmp, { recursive: true, force: true });
          if (errCode(err) === "ENOTEMPTY" || errCode(err) === "EEXIST") return dir;
          throw err;
        }
        return dir;
      })
      .finally(() => inflight.delete(dir));
    inflight.set(dir, p);
  }
  return p;
}
