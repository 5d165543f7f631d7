import { mkdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { FailedPreconditionError, NotFoundError } from "../errors.ts";
import { BlobStore } from "./blob-store.ts";
import type { Csek } from "./csek.ts";
import { writeFileAtomic } from "./fs-util.ts";
import { checkImageId, type ImageMeta, type OpenedImage, type StoreOptions } from "./image-meta.ts";
import { encodeManifest, IMAGE_ID, imageIdOf, type Manifest, manifestStats } from "./manifest.ts";
import { ManifestFiles } from "./manifest-files.ts";
import { Mutex, RWLock } from "./rwlock.ts";
import { SealedImages, type SealedStage } from "./sealed-store.ts";
import { DEFAULT_TTL_MS, expiryOf, mergeExpiry, type TtlPolicy } from "./ttl.ts";

export { checkImageId, type ImageMeta, type OpenedImage, type StoreOptions } from "./image-meta.ts";

/**
 * The image store under `<dataDir>/images`: blobs (content by sha256), image
 * manifests `manifests/<id>.json` (manifest-files.ts), metadata `meta/<id>.json` (expiry, origin,
 * totals), the unpack cache `unpacked/<id>/`, and the images sealed with a
 * customer-supplied key, each in its own directory `sealed/<id>/`.
 *
 * Contract:
 * - An image is visible once its manifest file exists; it is written last
 *   (after its blobs are durable and its metadata written), atomically, so a
 *   crash never leaves a visible half image.
 * - Writers (`publish`, snapshots, imports, unpacking) run under `lock.shared`;
 *   `delete` and gc run under `lock.exclusive`, so gc never removes a blob a
 *   writer has stored but not yet referenced.
 * - One router owns a data dir at a time.
 */
export class ImageStore {
  readonly blobs: BlobStore;
  readonly sealed: SealedImages;
  readonly lock = new RWLock();
  readonly tmpDir: string;
  /** The plain images' manifests. */
  private readonly manifests: ManifestFiles;
  readonly metaDir: string;
  readonly unpackedDir: string;
  readonly now: () => number;
  private readonly metaMutex = new Mutex();
  /** Counts of live users (mounts, task roots) per image: gc and delete leave those alone. */
  private readonly users = new Map<string, number>();

  constructor(
    readonly root: string,
    opts: StoreOptions = {},
  ) {
    this.tmpDir = join(root, "tmp");
    this.manifests = new ManifestFiles(join(root, "manifests"), this.tmpDir);
    this.metaDir = join(root, "meta");
    this.unpackedDir = join(root, "unpacked");
    this.blobs = new BlobStore(root, this.tmpDir);
    this.sealed = new SealedImages(root, this.tmpDir);
    this.now = opts.now ?? Date.now;
  }

  /** Creates the layout and removes temporary files a previous router left (crash debris). */
  async init(): Promise<void> {
    for (const d of [this.manifests.dir, this.metaDir, this.unpackedDir, join(this.root, "keys")]) {
      await mkdir(d, { recursive: true, mode: 0o700 });
    }
    await this.blobs.init();
    await this.sealed.init();
    await rm(this.tmpDir, { recursive: true, force: true });
    await mkdir(this.tmpDir, { recursive: true, mode: 0o700 });
  }

  private metaFile(id: string): string {
    return join(this.metaDir, `${id}.json`);
  }

  /**
   * Stores a manifest whose blobs are already committed and returns its id.
   * An image with the same tree that already exists is reused: its expiry
   * becomes the longer of the two.
   */
  async publish(manifest: Manifest, ttl: TtlPolicy, source: string): Promise<string> {
    const bytes = encodeManifest(manifest);
    const id = imageIdOf(bytes);
    const stats = manifestStats(manifest);
    const counts = { entries: manifest.entries.length, files: stats.files, bytes: stats.bytes };
    await this.publishAs(id, counts, ttl, source, () => this.manifests.write(id, bytes));
    return id;
  }

  /**
   * Publishes the sealed image whose blobs `stage` holds (see sealed-store.ts):
   * its id is keyed by `csek`, so the same tree with the same key is the same
   * image (the stage is dropped then, like the blobs of a repeated snapshot).
   */
  async publishSealed(
    manifest: Manifest,
    csek: Csek,
    stage: SealedStage,
    ttl: TtlPolicy,
    source: string,
  ): Promise<string> {
    const bytes = encodeManifest(manifest);
    const id = csek.imageIdOf(bytes);
    const counts = { entries: 0, files: 0, bytes: 0, encrypted: true };
    try {
      await this.publishAs(id, counts, ttl, source, () =>
        stage.install(csek, id, bytes, this.sealed.path(id)),
      );
    } finally {
      await stage.abort(); // nothing left to remove once installed
    }
    return id;
  }

  /** Writes the metadata of `id` (merging the expiry of an existing image), then `install`s it if new. */
  private async publishAs(
    id: string,
    counts: Pick<ImageMeta, "entries" | "files" | "bytes" | "encrypted">,
    ttl: TtlPolicy,
    source: string,
    install: () => Promise<void>,
  ): Promise<void> {
    const now = this.now();
    await this.metaMutex.run(async () => {
      const old = await this.readMeta(id);
      const exp = expiryOf(ttl, now);
      const meta: ImageMeta = old
        ? { ...old, ...mergeExpiry(old, exp) }
        : { id, createdAtMs: now, ...exp, source, ...counts };
      await writeFileAtomic(this.metaFile(id), Buffer.from(JSON.stringify(meta)), this.tmpDir);
      if (!(await this.exists(id))) await install();
    });
  }

  private async exists(id: string): Promise<boolean> {
    return (await this.manifests.has(id)) || this.sealed.has(id);
  }

  /** Metadata of `id`, or undefined. A missing metadata file gets defaults. */
  async readMeta(id: string): Promise<ImageMeta | undefined> {
    const raw = await readFile(this.metaFile(id), "utf8").catch(() => undefined);
    if (raw !== undefined) return JSON.parse(raw) as ImageMeta;
    if (!(await this.exists(id))) return undefined;
    const now = this.now();
    const base = {
      id,
      createdAtMs: now,
      expiresAtMs: now + DEFAULT_TTL_MS,
      renew: true,
      source: "",
    };
    if (await this.sealed.has(id))
      return { ...base, entries: 0, files: 0, bytes: 0, encrypted: true };
    const m = await this.manifest(id);
    const s = manifestStats(m);
    return { ...base, entries: m.entries.length, files: s.files, bytes: s.bytes };
  }

  /**
   * The tree of image `id`; NotFound when it does not exist or has expired,
   * FailedPrecondition for a sealed image (only `open` with its key reads it).
   */
  async get(id: string): Promise<Manifest> {
    await this.usable(id);
    return this.manifest(id);
  }

  /** The metadata of `id`, unless it does not exist or has expired (NotFound). */
  private async usable(id: string): Promise<ImageMeta> {
    checkImageId(id);
    const meta = await this.readMeta(id);
    if (!meta) throw new NotFoundError(`image ${id} not found`);
    if (this.expired(meta)) throw new NotFoundError(`image ${id} has expired`);
    return meta;
  }

  /**
   * Opens image `id` for a mount with the request's key, if any. A sealed
   * image needs its key (none: FailedPrecondition; another: PermissionDenied);
   * a key for a plain image is refused (FailedPrecondition), never ignored.
   */
  async open(id: string, csek: Csek | undefined): Promise<OpenedImage> {
    await this.usable(id);
    if (await this.sealed.has(id)) {
      if (!csek) {
        throw new FailedPreconditionError(
          `image ${id} is encrypted with a customer-supplied key: mount it with that key`,
        );
      }
      return this.sealed.open(id, csek);
    }
    if (csek) {
      throw new FailedPreconditionError(
        `image ${id} is not encrypted: mount it without a customer-supplied key`,
      );
    }
    return { manifest: await this.manifest(id) };
  }

  /** The tree of `id` whatever its expiry; verifies the bytes against the id. */
  async manifest(id: string): Promise<Manifest> {
    const m = await this.manifests.read(id);
    if (m) return m;
    if (await this.sealed.has(id)) {
      throw new FailedPreconditionError(
        `image ${id} is encrypted with a customer-supplied key: only TaskMountDirectory with that key can read it (not export, registry push, inspection of its tree or task roots)`,
      );
    }
    throw new NotFoundError(`image ${id} not found`);
  }

  expired(meta: ImageMeta): boolean {
    return meta.expiresAtMs !== null && meta.expiresAtMs <= this.now();
  }

  /** Pushes the expiry of a default-ttl image to now + 30 days (a use). Not fsynced. */
  async renew(id: string): Promise<void> {
    await this.metaMutex.run(async () => {
      const meta = await this.readMeta(id);
      if (!meta?.renew) return;
      const next = this.now() + DEFAULT_TTL_MS;
      if (meta.expiresAtMs !== null && meta.expiresAtMs >= next - 60_000) return;
      meta.expiresAtMs = next;
      // Losing a renewal to a machine crash only shortens a lifetime: no fsync.
      await writeFileAtomic(this.metaFile(id), Buffer.from(JSON.stringify(meta)), this.tmpDir, {
        durable: false,
      });
    });
  }

  /**
   * The metadata of every plain image (those readable without a key: what
   * the registry pushes), sorted by creation time; `withSealed` adds the
   * images sealed with a customer-supplied key (listings, gc).
   */
  async list(opts: { withSealed?: boolean } = {}): Promise<ImageMeta[]> {
    const ids = await this.manifests.ids();
    if (opts.withSealed) ids.push(...(await this.sealed.ids()));
    const out: ImageMeta[] = [];
    for (const id of new Set(ids)) {
      if (!IMAGE_ID.test(id)) continue;
      const meta = await this.readMeta(id);
      if (meta) out.push(meta);
    }
    return out.sort((a, b) => a.createdAtMs - b.createdAtMs || a.id.localeCompare(b.id));
  }

  /** Marks `id` as used by a live mount or task root (gc and delete leave it). */
  acquire(id: string): void {
    this.users.set(id, (this.users.get(id) ?? 0) + 1);
  }

  release(id: string): void {
    const n = (this.users.get(id) ?? 0) - 1;
    if (n > 0) this.users.set(id, n);
    else this.users.delete(id);
  }

  usersOf(id: string): number {
    return this.users.get(id) ?? 0;
  }

  /**
   * Removes image `id` (manifest first, so it vanishes at once, then metadata
   * and the unpack cache). Its blobs go at the next gc. NotFound when absent;
   * FailedPrecondition while mounted.
   */
  async delete(id: string): Promise<void> {
    checkImageId(id);
    await this.lock.exclusive(async () => {
      if (!(await this.exists(id))) throw new NotFoundError(`image ${id} not found`);
      const n = this.usersOf(id);
      if (n > 0) throw new FailedPreconditionError(`image ${id} is in use (${n} mount(s))`);
      await this.removeLocked(id);
    });
  }

  /** Removes an image's files; the caller holds the exclusive lock. */
  async removeLocked(id: string): Promise<void> {
    await this.manifests.remove(id);
    await rm(this.metaFile(id), { force: true });
    await rm(join(this.unpackedDir, id), { recursive: true, force: true });
    await this.sealed.remove(id);
  }
}
