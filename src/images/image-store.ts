import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { FailedPreconditionError, NotFoundError } from "../errors.ts";
import { checkMaxBytes, MAX, quote } from "../limits.ts";
import { BlobStore } from "./blob-store.ts";
import { errCode, writeFileAtomic } from "./fs-util.ts";
import {
  decodeManifest,
  encodeManifest,
  IMAGE_ID,
  imageIdOf,
  type Manifest,
  manifestStats,
} from "./manifest.ts";
import { Mutex, RWLock } from "./rwlock.ts";
import { DEFAULT_TTL_MS, expiryOf, mergeExpiry, type TtlPolicy } from "./ttl.ts";

/** What the store knows about an image besides its tree. */
export interface ImageMeta {
  id: string;
  createdAtMs: number;
  /** When gc may remove it (ms since the epoch); null: never. */
  expiresAtMs: number | null;
  /** True when made without ttl_seconds: every use pushes expiry to now + 30 days. */
  renew: boolean;
  /** Free text: where the image came from ("snapshot task ... path ...", "import ..."). */
  source: string;
  entries: number;
  files: number;
  bytes: number;
}

export interface StoreOptions {
  /** The clock (ms since the epoch); tests move it. */
  now?: () => number;
}

/**
 * Checks an image id from a request: InvalidArgument past MAX.imageId bytes,
 * NotFound when it is not of our form (`im-<32 hex>`), so no such image.
 */
export function checkImageId(id: string): void {
  checkMaxBytes("image_id", id, MAX.imageId);
  if (!IMAGE_ID.test(id)) throw new NotFoundError(`image ${quote(id)} not found`);
}

/**
 * The image store under `<dataDir>/images`: blobs (content by sha256), image
 * manifests `manifests/<id>.json` (canonical bytes; the id is derived from
 * them and checked on read), metadata `meta/<id>.json` (expiry, origin,
 * totals) and the unpack cache `unpacked/<id>/`.
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
  readonly lock = new RWLock();
  readonly tmpDir: string;
  readonly manifestsDir: string;
  readonly metaDir: string;
  readonly unpackedDir: string;
  readonly now: () => number;
  private readonly metaMutex = new Mutex();
  private readonly cache = new Map<string, Manifest>();
  /** Counts of live users (mounts, task roots) per image: gc and delete leave those alone. */
  private readonly users = new Map<string, number>();

  constructor(
    readonly root: string,
    opts: StoreOptions = {},
  ) {
    this.tmpDir = join(root, "tmp");
    this.manifestsDir = join(root, "manifests");
    this.metaDir = join(root, "meta");
    this.unpackedDir = join(root, "unpacked");
    this.blobs = new BlobStore(root, this.tmpDir);
    this.now = opts.now ?? Date.now;
  }

  /** Creates the layout and removes temporary files a previous router left (crash debris). */
  async init(): Promise<void> {
    for (const d of [this.manifestsDir, this.metaDir, this.unpackedDir, join(this.root, "keys")]) {
      await mkdir(d, { recursive: true, mode: 0o700 });
    }
    await this.blobs.init();
    await rm(this.tmpDir, { recursive: true, force: true });
    await mkdir(this.tmpDir, { recursive: true, mode: 0o700 });
  }

  private manifestFile(id: string): string {
    return join(this.manifestsDir, `${id}.json`);
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
    const now = this.now();
    await this.metaMutex.run(async () => {
      const old = await this.readMeta(id);
      const exp = expiryOf(ttl, now);
      const stats = manifestStats(manifest);
      const meta: ImageMeta = old
        ? { ...old, ...mergeExpiry(old, exp) }
        : {
            id,
            createdAtMs: now,
            ...exp,
            source,
            entries: manifest.entries.length,
            files: stats.files,
            bytes: stats.bytes,
          };
      await writeFileAtomic(this.metaFile(id), Buffer.from(JSON.stringify(meta)), this.tmpDir);
      if (!(await this.exists(id))) {
        await writeFileAtomic(this.manifestFile(id), bytes, this.tmpDir);
      }
    });
    return id;
  }

  private async exists(id: string): Promise<boolean> {
    return readFile(this.manifestFile(id)).then(
      () => true,
      () => false,
    );
  }

  /** Metadata of `id`, or undefined. A missing metadata file gets defaults. */
  async readMeta(id: string): Promise<ImageMeta | undefined> {
    const raw = await readFile(this.metaFile(id), "utf8").catch(() => undefined);
    if (raw !== undefined) return JSON.parse(raw) as ImageMeta;
    if (!(await this.exists(id))) return undefined;
    const m = await this.manifest(id);
    const s = manifestStats(m);
    const now = this.now();
    return {
      id,
      createdAtMs: now,
      expiresAtMs: now + DEFAULT_TTL_MS,
      renew: true,
      source: "",
      entries: m.entries.length,
      files: s.files,
      bytes: s.bytes,
    };
  }

  /** The tree of image `id`; NotFound when it does not exist or has expired. */
  async get(id: string): Promise<Manifest> {
    checkImageId(id);
    const meta = await this.readMeta(id);
    if (!meta) throw new NotFoundError(`image ${id} not found`);
    if (this.expired(meta)) throw new NotFoundError(`image ${id} has expired`);
    return this.manifest(id);
  }

  /** The tree of `id` whatever its expiry; verifies the bytes against the id. */
  async manifest(id: string): Promise<Manifest> {
    const hit = this.cache.get(id);
    if (hit) return hit;
    let bytes: Buffer;
    try {
      bytes = await readFile(this.manifestFile(id));
    } catch (err) {
      if (errCode(err) === "ENOENT") throw new NotFoundError(`image ${id} not found`);
      throw err;
    }
    if (imageIdOf(bytes) !== id) throw new Error(`manifest of ${id} is corrupt`);
    const m = decodeManifest(bytes);
    if (this.cache.size >= 32) this.cache.delete(this.cache.keys().next().value as string);
    this.cache.set(id, m);
    return m;
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

  /** Every image's metadata, sorted by creation time. */
  async list(): Promise<ImageMeta[]> {
    const names = await readdir(this.manifestsDir).catch(() => [] as string[]);
    const out: ImageMeta[] = [];
    for (const n of names) {
      const id = n.replace(/\.json$/, "");
      if (!IMAGE_ID.test(id) || n === id) continue;
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
    await rm(this.manifestFile(id), { force: true });
    this.cache.delete(id);
    await rm(this.metaFile(id), { force: true });
    await rm(join(this.unpackedDir, id), { recursive: true, force: true });
  }
}
