import { join } from "node:path";
import { InvalidArgumentError, NotFoundError } from "../errors.ts";
import { checkMaxBytes, MAX } from "../limits.ts";
import { Csek } from "./csek.ts";
import { collectGarbage, type GcResult } from "./gc.ts";
import { checkImageId, type ImageMeta, ImageStore, type StoreOptions } from "./image-store.ts";
import { emptyManifest, type Manifest } from "./manifest.ts";
import { MountManager, type MountRecord } from "./mounts.ts";
import { type ExportStream, exportImage } from "./oci-export.ts";
import { type ImportOptions, importChunks } from "./oci-import.ts";
import { type BinPath, parseRequestPath } from "./paths.ts";
import { RecentUnmounts } from "./recent-unmounts.ts";
import type { ImageRemote, TransferOptions, TransferResult } from "./remote.ts";
import { RemoteImages } from "./remote-images.ts";
import type {
  CallTarget,
  SnapshotEvent,
  SnapshotRequest,
  TaskFs,
  TaskFsLookup,
} from "./service-types.ts";
import type { SnapshotOptions } from "./snapshot.ts";
import { Snapshots } from "./snapshots.ts";
import { parseTtl } from "./ttl.ts";
import { ensureUnpacked } from "./unpack.ts";

export type {
  CallTarget,
  SnapshotEvent,
  SnapshotRequest,
  TaskFs,
  TaskFsLookup,
} from "./service-types.ts";

export interface ImageServiceOptions extends StoreOptions {
  onSnapshotProgress?: (ev: SnapshotEvent) => void;
  /** "overlay" (default as root) or "copy" (default otherwise; tests force it). */
  mountMode?: "overlay" | "copy";
  /** Test hook: opens files for snapshots (count reads, inject failures). */
  openFile?: SnapshotOptions["openFile"];
  /**
   * Where images are shared (`serve --registry`): every image made here is
   * handed to it, and an image the store lacks is pulled from it first.
   */
  remote?: (store: ImageStore) => ImageRemote;
  /** Test hook: the record of recent unmounts (its window and clock). */
  recentUnmounts?: RecentUnmounts;
}

/**
 * The images domain API the server adapters call: TaskMountDirectory,
 * TaskUnmountDirectory, TaskSnapshotDirectory, TaskSnapshotFilesystem, and
 * the store's admin operations. Request paths are validated and resolved
 * here (see paths.ts and resolve.ts).
 */
export class ImageService {
  readonly store: ImageStore;
  readonly mounts: MountManager;
  /** The registry images are pushed to and pulled from, if any. */
  readonly remote: ImageRemote | undefined;
  /** How this service uses `remote` (remote-images.ts). */
  private readonly remoteImages: RemoteImages;
  private readonly snapshots: Snapshots;
  /** Unmounts done lately: a replay of one is answered OK (recent-unmounts.ts). */
  private readonly recentUnmounts: RecentUnmounts;

  constructor(
    dataDir: string,
    private readonly lookup: TaskFsLookup,
    opts: ImageServiceOptions = {},
  ) {
    this.store = new ImageStore(join(dataDir, "images"), opts);
    this.mounts = new MountManager(this.store, opts.mountMode ? { mode: opts.mountMode } : {});
    this.recentUnmounts = opts.recentUnmounts ?? new RecentUnmounts();
    this.remote = opts.remote?.(this.store);
    const remoteImages = new RemoteImages(this.store, this.remote);
    this.remoteImages = remoteImages;
    this.snapshots = new Snapshots(this.store, this.mounts, {
      onSnapshotProgress: opts.onSnapshotProgress,
      openFile: opts.openFile,
      imageMade: (id) => remoteImages.imageMade(id),
    });
  }

  /** Prepares the store; `keep` says which mounts left by a previous router stay (others go). */
  async init(keep: (rec: MountRecord) => boolean): Promise<void> {
    await this.store.init();
    await this.mounts.init(keep);
    await this.remoteImages.start();
  }

  /**
   * Pushes image `id` to the remote now (FailedPrecondition without
   * `--registry`, and for a sealed image: those never leave this store).
   */
  pushImage(id: string, opts: TransferOptions = {}): Promise<TransferResult> {
    return this.remoteImages.push(id, opts);
  }

  /** Pulls image `id` from the remote unless the store has it. */
  pullImage(id: string, opts: TransferOptions = {}): Promise<TransferResult> {
    return this.remoteImages.pull(id, opts);
  }

  private taskFs(
    taskId: string,
    raw: Uint8Array,
    target: CallTarget,
  ): { fs: TaskFs; components: BinPath[] } {
    const components = parseRequestPath(raw);
    const fs = this.targetFs(taskId, target);
    return { fs, components: fs.localPath ? fs.localPath(components) : components };
  }

  /** The task's filesystem, after refusing what CallTarget says is not served. */
  private targetFs(taskId: string, target: CallTarget): TaskFs {
    if (target.containerId) checkMaxBytes("container_id", target.containerId, MAX.containerId);
    return this.lookup(taskId, target.containerId || undefined);
  }

  /** TaskMountDirectory: mounts image `imageId` ("" = empty directory) at `path`. */
  async mountDirectory(
    taskId: string,
    path: Uint8Array,
    imageId: string,
    target: CallTarget = {},
  ): Promise<void> {
    const { fs, components } = this.taskFs(taskId, path, target);
    const csek = Csek.from(target.encryptionKey);
    try {
      if (csek && !imageId) {
        throw new InvalidArgumentError(
          "customer_supplied_encryption_key needs an image_id (an empty directory has nothing to decrypt)",
        );
      }
      if (imageId) await this.remoteImages.fetchMissing(imageId);
      const image = imageId ? await this.store.open(imageId, csek) : { manifest: emptyManifest() };
      try {
        await this.mounts.withTask(taskId, async () => {
          this.lookup(taskId, target.containerId || undefined); // still running
          // Before the mount: one that fails part-way may still show in the task.
          this.recentUnmounts.mounted(taskId, RecentUnmounts.key(target.containerId, components));
          await this.mounts.mount(taskId, fs, components, imageId, image.manifest, image.writeFile);
        });
      } finally {
        image.dispose?.();
      }
    } finally {
      csek?.dispose();
    }
    if (imageId) await this.store.renew(imageId);
  }

  /**
   * TaskUnmountDirectory: removes our mount at `path`; what it hid reappears. NotFound when
   * nothing of ours is mounted there, except for a replay of an unmount of that very path
   * done moments ago (its answer lost on the way), which is answered OK as the first was.
   */
  async unmountDirectory(taskId: string, path: Uint8Array, target: CallTarget = {}): Promise<void> {
    const { fs, components } = this.taskFs(taskId, path, target);
    const key = RecentUnmounts.key(target.containerId, components);
    await this.mounts.withTask(taskId, async () => {
      try {
        await this.mounts.unmount(taskId, fs, components);
      } catch (err) {
        if (err instanceof NotFoundError && this.recentUnmounts.isReplay(taskId, key)) return;
        throw err;
      }
      this.recentUnmounts.unmounted(taskId, key);
    });
  }

  /** TaskSnapshotDirectory: captures the directory at `path` as an image; returns its id. */
  snapshotDirectory(taskId: string, path: Uint8Array, req: SnapshotRequest): Promise<string> {
    const { fs, components } = this.taskFs(taskId, path, req);
    return this.snapshots.directory(taskId, fs, components, req);
  }

  /**
   * TaskSnapshotFilesystem: captures the task's whole root filesystem as the
   * router sees it, without the content of directories mounted by
   * TaskMountDirectory (snapshot those separately).
   */
  snapshotFilesystem(taskId: string, req: SnapshotRequest): Promise<string> {
    return this.snapshots.filesystem(taskId, this.targetFs(taskId, req), req);
  }

  /**
   * The unpacked tree of image `imageId`, for a runtime that builds a task's
   * root on it (read-only lower layer). The image is held until `release`.
   * `opts.expired`: an expired image still on disk is fine too (a task
   * created on it earlier is re-adopted after a restart).
   */
  async acquireUnpacked(
    imageId: string,
    opts: { expired?: boolean } = {},
  ): Promise<{ dir: string; release: () => void }> {
    if (!opts.expired) {
      await this.remoteImages.fetchMissing(imageId);
      await this.store.get(imageId);
    } else {
      checkImageId(imageId);
      if (!(await this.store.readMeta(imageId)))
        throw new NotFoundError(`image ${imageId} not found`);
    }
    this.store.acquire(imageId);
    try {
      const dir = await ensureUnpacked(this.store, imageId);
      let released = false;
      return {
        dir,
        release: () => {
          if (!released) this.store.release(imageId);
          released = true;
        },
      };
    } catch (err) {
      this.store.release(imageId);
      throw err;
    }
  }

  /** Removes every mount of a task (task teardown). */
  teardownTask(taskId: string): Promise<void> {
    // Under the task's lock, after any unmount queued before it (which records one).
    return this.mounts.withTask(taskId, async () => {
      try {
        await this.mounts.teardownTask(taskId);
      } finally {
        this.recentUnmounts.forgetTask(taskId);
      }
    });
  }

  /** Router shutdown: removes the mounts of tasks on runtimes whose tasks end with the router. */
  async shutdown(endsWithRouter: (rec: MountRecord) => boolean): Promise<void> {
    const tasks = new Set(
      this.mounts
        .list()
        .filter(endsWithRouter)
        .map((r) => r.taskId),
    );
    for (const t of tasks) await this.teardownTask(t);
    await this.remoteImages.close();
  }

  list(): Promise<ImageMeta[]> {
    return this.store.list({ withSealed: true });
  }

  /** An image's metadata and tree (a sealed image's tree is secret: no entries, not even its root). */
  async inspect(id: string): Promise<{ meta: ImageMeta; manifest: Manifest; users: number }> {
    await this.remoteImages.fetchMissing(id);
    const meta = await this.store.readMeta(id);
    if (!meta) throw new NotFoundError(`image ${id} not found`);
    const sealed = await this.store.sealed.has(id);
    const manifest = sealed ? { entries: [] } : await this.store.manifest(id);
    return { meta, manifest, users: this.store.usersOf(id) };
  }

  delete(id: string): Promise<void> {
    return this.store.delete(id);
  }

  gc(): Promise<GcResult> {
    return collectGarbage(this.store);
  }

  /**
   * Imports an image archive arriving as `chunks` (spooled, then imported: see
   * oci-import.ts `importChunks`). Returns the image id.
   */
  async importStream(
    chunks: AsyncIterable<Uint8Array>,
    opts: {
      format: ImportOptions["format"];
      ttlSeconds?: bigint | undefined;
      source: string;
      signal?: AbortSignal;
    },
  ): Promise<string> {
    const o: ImportOptions = {
      format: opts.format,
      ttl: parseTtl(opts.ttlSeconds),
      source: opts.source,
    };
    if (opts.signal) o.signal = opts.signal;
    const id = await importChunks(this.store, chunks, o);
    this.remoteImages.imageMade(id);
    return id;
  }

  /** Streams image `id` as an OCI image archive (see oci-export.ts). */
  async exportImage(id: string, signal?: AbortSignal): Promise<ExportStream> {
    await this.remoteImages.fetchMissing(id);
    return exportImage(this.store, id, signal);
  }
}
