import { join } from "node:path";
import { FailedPreconditionError, InvalidArgumentError } from "../errors.ts";
import { Csek } from "./csek.ts";
import type { ImageStore } from "./image-store.ts";
import { emptyManifest, type Manifest, ManifestIndex } from "./manifest.ts";
import type { MountManager } from "./mounts.ts";
import type { BinPath } from "./paths.ts";
import { show } from "./paths.ts";
import { requestPath, resolveDir } from "./resolve.ts";
import type { SnapshotEvent, SnapshotRequest, TaskFs } from "./service-types.ts";
import { type SnapshotOptions, snapshotTree } from "./snapshot.ts";
import { SnapshotKeys } from "./snapshot-keys.ts";
import { parseTtl, type TtlPolicy } from "./ttl.ts";

export interface SnapshotsOptions {
  onSnapshotProgress?: ((ev: SnapshotEvent) => void) | undefined;
  openFile?: SnapshotOptions["openFile"] | undefined;
  /** A plain image was made (the registry pushes it); sealed images are never handed on. */
  imageMade?: ((id: string) => void) | undefined;
}

/** One capture: what is walked and how the image is stored. */
interface Capture {
  taskId: string;
  fs: TaskFs;
  /** The directory walked (a host path, often /proc/self/fd/N). */
  root: string;
  ttl: TtlPolicy;
  label: string;
  /** Seal the image with this customer-supplied key (sealed-store.ts). */
  csek: Csek | undefined;
}

/**
 * TaskSnapshotDirectory and TaskSnapshotFilesystem for ImageService (which
 * has resolved and checked the request's task and path): idempotent per
 * snapshot_id, incremental over our overlay mounts of plain images, sealed
 * with the request's customer-supplied key when it has one.
 */
export class Snapshots {
  private readonly keys: SnapshotKeys;

  constructor(
    private readonly store: ImageStore,
    private readonly mounts: MountManager,
    private readonly opts: SnapshotsOptions,
  ) {
    this.keys = new SnapshotKeys(
      join(store.root, "keys"),
      store.tmpDir,
      async (id) => (await store.readMeta(id)) !== undefined,
    );
  }

  /** Captures the directory at `components` of `fs` as an image; returns its id. */
  async directory(
    taskId: string,
    fs: TaskFs,
    components: BinPath[],
    req: SnapshotRequest,
  ): Promise<string> {
    const ttl = parseTtl(req.ttlSeconds);
    const csek = Csek.from(req.encryptionKey);
    const b64 = Buffer.from(components.join("/"), "latin1").toString("base64");
    return this.once(taskId, req, `dir:${b64}`, csek, () =>
      this.store.lock.shared(async () => {
        const dir = await resolveDir(fs, components, { create: false });
        let unhold: (() => Promise<void>) | undefined;
        try {
          const st = await dir.fh.stat();
          const rec = this.mounts.mountAt(taskId, { dev: st.dev, ino: st.ino });
          if (rec) unhold = this.mounts.hold(rec); // an unmount meanwhile keeps its layer for us
          // Incremental only between plain images: a sealed one is read through the mount.
          const base =
            rec && !rec.copy && !rec.sealed && !csek
              ? { upper: this.mounts.upperOf(rec), lower: await this.lowerIndex(rec.imageId) }
              : undefined;
          const label = `snapshot ${taskId}:${show(requestPath(fs, components))}`;
          return await this.capture({ taskId, fs, root: dir.fdPath, ttl, label, csek }, req, {
            base,
          });
        } finally {
          await unhold?.();
          await dir.close();
        }
      }),
    );
  }

  /** Captures the task's root filesystem, without the content of our mounts in it; `ttl_seconds` required. */
  async filesystem(taskId: string, fs: TaskFs, req: SnapshotRequest): Promise<string> {
    if (req.ttlSeconds === undefined) {
      // PROTOCOL-LATER §5.7: required here (the SDKs always send it), unlike on a directory.
      throw new InvalidArgumentError(
        "ttl_seconds is required for TaskSnapshotFilesystem: the image's lifetime in seconds, or -1 for never",
      );
    }
    const ttl = parseTtl(req.ttlSeconds);
    if (fs.runtime === "host") {
      throw new FailedPreconditionError(
        "the host runtime has no task root filesystem: snapshot a directory with TaskSnapshotDirectory",
      );
    }
    const csek = Csek.from(req.encryptionKey);
    return this.once(taskId, req, "fs", csek, () =>
      this.store.lock.shared(async () => {
        const layers = csek ? undefined : fs.rootLayers;
        const base = layers
          ? { upper: layers.upper, lower: await this.lowerIndex(layers.imageId) }
          : undefined;
        const label = `snapshot ${taskId}:/`;
        return this.capture({ taskId, fs, root: fs.root, ttl, label, csek }, req, {
          base,
          skipDir: (st) => this.mounts.mountAt(taskId, st) !== undefined,
        });
      }),
    );
  }

  /**
   * Runs a snapshot once per snapshot_id (SnapshotKeys). With a key, the
   * target records that the image is sealed (the same id with and without a
   * key conflicts), and a repeat or a joined capture must open the image
   * with its own key (PermissionDenied otherwise). The key is disposed after.
   */
  private async once(
    taskId: string,
    req: SnapshotRequest,
    target: string,
    csek: Csek | undefined,
    capture: () => Promise<string>,
  ): Promise<string> {
    try {
      const key = csek ? `${target}+csek` : target;
      const id = await this.keys.once(taskId, req.snapshotId ?? "", key, capture);
      if (csek) (await this.store.sealed.open(id, csek)).dispose();
      return id;
    } finally {
      csek?.dispose();
    }
  }

  private async lowerIndex(imageId: string): Promise<ManifestIndex> {
    return new ManifestIndex(imageId ? await this.store.manifest(imageId) : emptyManifest());
  }

  /**
   * Walks `c.root` (the task frozen when its runtime can), stores the file
   * contents (plain blobs, or the encrypted blobs of a new sealed image) and
   * publishes the image; returns its id. The caller holds the store's shared
   * lock. All or nothing: a failure leaves temporary files only.
   */
  private async capture(
    c: Capture,
    req: SnapshotRequest,
    walk: Pick<SnapshotOptions, "base" | "skipDir">,
  ): Promise<string> {
    const store = this.store;
    const stage = c.csek ? await store.sealed.stage() : undefined;
    const batch = store.blobs.batch(); // stays empty for a sealed image
    const startedAt = Date.now();
    const { taskId, label } = c;
    const report = this.opts.onSnapshotProgress;
    let manifest: Manifest;
    try {
      const thaw = c.fs.freeze ? await c.fs.freeze() : undefined;
      try {
        const o: SnapshotOptions = { ...walk };
        if (req.signal) o.signal = req.signal;
        if (this.opts.openFile) o.openFile = this.opts.openFile;
        if (report) o.onProgress = (p) => report({ ...p, taskId, label, startedAt, done: false });
        manifest = await snapshotTree(c.root, stage ?? batch, o);
      } finally {
        await thaw?.();
      }
      await batch.commit();
    } catch (err) {
      await (stage ?? batch).abort();
      throw err;
    } finally {
      report?.({ files: 0, bytes: 0, taskId, label, startedAt, done: true });
    }
    if (stage && c.csek) return store.publishSealed(manifest, c.csek, stage, c.ttl, label);
    const id = await store.publish(manifest, c.ttl, label);
    this.opts.imageMade?.(id);
    return id;
  }
}
