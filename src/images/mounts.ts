import { randomBytes } from "node:crypto";
import { mkdir, readdir } from "node:fs/promises";
import { join } from "node:path";
import { NotFoundError } from "../errors.ts";
import type { ImageStore } from "./image-store.ts";
import { LayerHolds } from "./layer-holds.ts";
import type { Manifest } from "./manifest.ts";
import { decryptLayer, removeLayerDir } from "./mount-layer.ts";
import { type MountRecord, newRecord, readRecord, saveRecord } from "./mount-record.ts";
import { copyIn, copyOut } from "./mounts-copy.ts";
import {
  detachMount,
  detachOverlay,
  detachOverlayFully,
  mountOverlay,
  overlayMounted,
  overlayRoot,
} from "./overlay.ts";
import { type BinPath, show } from "./paths.ts";
import {
  type FsRoot,
  type MountRoot,
  type ResolvedDir,
  requestPath,
  resolveDir,
} from "./resolve.ts";
import { Mutex } from "./rwlock.ts";
import type { FileWriter } from "./sealed-store.ts";
import { CAN_CHOWN, ensureUnpacked, setAttrs } from "./unpack.ts";

export type { MountRecord } from "./mount-record.ts";

/**
 * The overlay mounts of every task. Each mount has its own writable layer
 * (`<images>/mounts/<id>/upper`, with `work`) over the image unpacked once
 * into the store's cache (or an empty directory), so mounting costs the same
 * whatever the image's size once unpacked. The image is held (`acquire`)
 * while mounted so gc and delete leave it alone.
 *
 * Unmounting finds a mount by the device and inode of its root and detaches
 * it through an open handle of that very directory, so a path a task renamed
 * or redirected with symlinks can never make us unmount something else.
 */
export class MountManager {
  private readonly byId = new Map<string, MountRecord>();
  private readonly taskLocks = new Map<string, Mutex>();
  /** The mounts' layers, kept while snapshots read them (layer-holds.ts). */
  private readonly layers: LayerHolds;
  readonly dir: string;
  /** "overlay" (root) or "copy" (not root: the tree is copied in, see mounts-copy.ts). */
  readonly mode: "overlay" | "copy";

  constructor(
    private readonly store: ImageStore,
    opts: { mode?: "overlay" | "copy" } = {},
  ) {
    this.dir = join(store.root, "mounts");
    this.layers = new LayerHolds(this.dir, store);
    this.mode = opts.mode ?? (CAN_CHOWN ? "overlay" : "copy");
  }

  /** Serializes the mount operations of one task. */
  withTask<T>(taskId: string, fn: () => Promise<T>): Promise<T> {
    let m = this.taskLocks.get(taskId);
    if (!m) {
      m = new Mutex();
      this.taskLocks.set(taskId, m);
    }
    return m.run(fn);
  }

  /**
   * Loads the records a previous router left: mounts of tasks `keep` accepts
   * are adopted, the others are detached and removed.
   */
  async init(keep: (rec: MountRecord) => boolean): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await mkdir(join(this.store.root, "empty"), { recursive: true, mode: 0o755 });
    for (const id of await readdir(this.dir)) {
      const rec = await readRecord(this.dir, id);
      if (rec && rec.id === id && keep(rec)) {
        this.byId.set(id, rec);
        if (rec.imageId) this.store.acquire(rec.imageId);
      } else {
        if (rec?.copy) await copyOut(rec.copy);
        else await detachOverlay(id, rec?.dev);
        await removeLayerDir(join(this.dir, id));
      }
    }
  }

  /** The mounts of `taskId` (every task when undefined). */
  list(taskId?: string): MountRecord[] {
    return [...this.byId.values()].filter((r) => taskId === undefined || r.taskId === taskId);
  }

  /** The upper layer directory of a mount. */
  upperOf(rec: MountRecord): string {
    return join(this.dir, rec.id, "upper");
  }

  /** The mount of `taskId` whose root is the directory with this device and inode. */
  mountAt(taskId: string, st: { dev: number; ino: number }): MountRecord | undefined {
    return this.list(taskId).find((r) => r.dev === st.dev && r.ino === st.ino);
  }

  /**
   * Mounts `manifest` (image `imageId`, "" for empty) at the path `components`
   * inside `fsRoot`, creating missing directories; a mount of ours already
   * there is replaced. `writeFile` (a sealed image) decrypts its files: into
   * a tmpfs layer of this mount, or into the copy in copy mode. The caller holds `withTask(taskId)`. All or nothing:
   * when a step fails, what the call did is undone (the overlay detached, its
   * layer and the directories it created removed); a mount that cannot be
   * detached keeps its record, so unmount and teardown still find it.
   */
  async mount(
    taskId: string,
    fsRoot: MountRoot,
    components: readonly BinPath[],
    imageId: string,
    manifest: Manifest,
    writeFile?: FileWriter,
  ): Promise<MountRecord> {
    if (this.mode === "copy") {
      return this.mountCopy(taskId, fsRoot, components, imageId, manifest, writeFile);
    }
    if (imageId) this.store.acquire(imageId);
    let target: ResolvedDir | undefined;
    let rec: MountRecord | undefined;
    let mounted = false;
    const id = `mnt-${randomBytes(8).toString("hex")}`;
    const base = join(this.dir, id);
    try {
      let lower = "empty";
      if (writeFile) {
        await decryptLayer(this.store, base, manifest, writeFile);
        lower = `mounts/${id}/lower`;
      } else if (imageId) {
        lower = (await ensureUnpacked(this.store, imageId)).slice(this.store.root.length + 1);
      }
      target = await resolveDir(fsRoot, components, { create: true });
      const st = await target.fh.stat();
      const old = this.mountAt(taskId, { dev: st.dev, ino: st.ino });
      if (old) {
        await this.detach(old, target.fh.fd, fsRoot);
        await target.close();
        target = undefined;
        target = await resolveDir(fsRoot, components, { create: true });
      }
      await mkdir(join(base, "work"), { recursive: true, mode: 0o700 });
      const upper = join(base, "upper");
      await mkdir(upper, { mode: 0o755 });
      // The mount's root shows the upper directory's attributes: give it the image root's.
      const root = imageId ? manifest.entries[0] : undefined;
      if (root) await setAttrs(upper, root);
      rec = newRecord(id, taskId, imageId, { fsRoot, components }, { dev: 0, ino: 0 });
      if (writeFile) rec.sealed = true;
      await this.save(rec);
      await mountOverlay(target.fh.fd, {
        cwd: this.store.root,
        lower,
        upper: `mounts/${id}/upper`,
        work: `mounts/${id}/work`,
      });
      mounted = true;
      const where = await overlayRoot(id);
      rec.dev = where.dev;
      rec.ino = where.ino;
      await this.save(rec);
      await fsRoot.exposeMount?.(where.where, where);
      this.byId.set(id, rec);
      return rec;
    } catch (err) {
      const kept = rec ? await this.undoMount(rec, fsRoot, mounted) : false;
      if (!rec) await removeLayerDir(base).catch(() => undefined);
      if (!kept) {
        await target?.undoCreate();
        if (imageId) this.store.release(imageId);
      }
      throw err;
    } finally {
      await target?.close();
    }
  }

  /**
   * Undoes a mount that failed part-way: hides it from the task, detaches
   * it, removes its layer. True when it could not be detached: its record
   * is kept then (the image stays held) for unmount and teardown.
   */
  private async undoMount(rec: MountRecord, fsRoot: MountRoot, mounted: boolean): Promise<boolean> {
    if (rec.dev) await fsRoot.hideMount?.(rec.dev).catch(() => undefined);
    if (mounted && !(await detachOverlayFully(rec.id))) {
      this.byId.set(rec.id, rec);
      return true;
    }
    await removeLayerDir(join(this.dir, rec.id)).catch(() => undefined);
    return false;
  }

  /** Copy mode: replaces a copy already there, then copies the tree in (mounts-copy.ts). */
  private async mountCopy(
    taskId: string,
    fsRoot: FsRoot,
    components: readonly BinPath[],
    imageId: string,
    manifest: Manifest,
    writeFile: FileWriter | undefined,
  ): Promise<MountRecord> {
    const existing = await resolveDir(fsRoot, components, { create: false }).catch(() => undefined);
    if (existing) {
      const st = await existing.fh.stat().finally(() => existing.close());
      const old = this.mountAt(taskId, { dev: st.dev, ino: st.ino });
      if (old) await this.detach(old, -1, fsRoot);
    }
    const id = `mnt-${randomBytes(8).toString("hex")}`;
    const store = this.store;
    const copy = await store.lock.shared(() =>
      copyIn(store, fsRoot, components, manifest, id, writeFile),
    );
    const rec = { ...newRecord(id, taskId, imageId, { fsRoot, components }, copy), copy };
    await mkdir(join(this.dir, id), { recursive: true, mode: 0o700 });
    await this.save(rec);
    this.byId.set(id, rec);
    return rec;
  }

  private save(rec: MountRecord): Promise<void> {
    return saveRecord(this.dir, rec, this.store.tmpDir);
  }

  /**
   * Unmounts our mount at `components` (what it hid reappears; its writes
   * are dropped). NotFound when there is no mount of ours there.
   */
  async unmount(taskId: string, fsRoot: MountRoot, components: readonly BinPath[]): Promise<void> {
    const target = await resolveDir(fsRoot, components, { create: false });
    try {
      const st = await target.fh.stat();
      const rec = this.mountAt(taskId, { dev: st.dev, ino: st.ino });
      if (!rec) {
        throw new NotFoundError(
          `no directory is mounted at ${show(requestPath(fsRoot, components))}`,
        );
      }
      await this.detach(rec, target.fh.fd, fsRoot);
    } finally {
      await target.close();
    }
  }

  /** Detaches `rec` (its root open as `fd`), then forgets it and any mount that went with it. */
  private async detach(rec: MountRecord, fd: number, fsRoot: MountRoot): Promise<void> {
    if (rec.copy) {
      await copyOut(rec.copy);
      await this.forget(rec);
      return;
    }
    await detachMount(fd);
    try {
      await fsRoot.hideMount?.(rec.dev);
    } finally {
      // The router's mount is gone either way: so is its record.
      await this.forget(rec);
    }
    for (const other of this.list(rec.taskId)) {
      if (!other.copy && !(await overlayMounted(other.id))) await this.forget(other);
    }
  }

  private async forget(rec: MountRecord): Promise<void> {
    this.byId.delete(rec.id);
    await this.layers.remove(rec);
  }

  /**
   * Keeps a mount's layer (and its image) while a snapshot reads it, even if
   * the mount is removed meanwhile; call the returned function when done.
   */
  hold(rec: MountRecord): () => Promise<void> {
    return this.layers.hold(rec);
  }

  /** Removes every mount of `taskId` (task teardown). Never throws for a mount already gone. */
  async teardownTask(taskId: string): Promise<void> {
    const recs = this.list(taskId).sort((a, b) => b.createdAtMs - a.createdAtMs);
    for (const rec of recs) {
      if (!this.byId.has(rec.id)) continue; // went with an outer mount
      if (rec.copy) await copyOut(rec.copy);
      else await detachOverlay(rec.id, rec.dev);
      await this.forget(rec);
    }
  }
}
