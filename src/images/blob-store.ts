import { createHash, type Hash } from "node:crypto";
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import {
  BUFFER_SIZE,
  closeFd,
  openFd,
  readFd,
  releaseBuffer,
  takeBuffer,
  writeAll,
} from "./fdio.ts";
import { fsyncDir, syncFilesystem, tmpName } from "./fs-util.ts";

const HEX = /^[0-9a-f]{64}$/;

/** A chunk source for a blob: bytes in order, ended by the iterator's end. */
export type ByteSource = AsyncIterable<Uint8Array>;

export interface BlobRef {
  /** `sha256:<hex>` */
  digest: string;
  size: number;
}

/** Where a snapshot stores file contents: plain blobs (BlobBatch) or a sealed image's. */
export interface BlobSink {
  /** Copies the open file `fd` (start to end) into a blob; digest and size of its content. */
  writeFd(fd: number, onBytes?: (n: number) => void): Promise<BlobRef>;
}

/**
 * Content-addressed file storage: `<root>/blobs/sha256/<hex>` holds the bytes
 * whose sha256 is `<hex>`, stored once however many images use it. Blobs
 * are read-only (0444) and never change once visible.
 *
 * Contract: blobs are written through a `BlobBatch`; a blob becomes visible
 * at its final name only after its bytes are on disk (the batch's commit
 * syncs the filesystem, then renames), so a crash leaves temporary files
 * (removed by gc) and never a blob whose content does not match its name.
 */
export class BlobStore {
  readonly dir: string;
  /** Digests known to be stored (the blob directory's listing, kept up to date). */
  private known: Promise<Set<string>> | undefined;

  constructor(
    root: string,
    readonly tmpDir: string,
  ) {
    this.dir = join(root, "blobs", "sha256");
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  /** The file of a blob (which may not exist). */
  path(digest: string): string {
    const hex = digest.startsWith("sha256:") ? digest.slice(7) : "";
    if (!HEX.test(hex)) throw new Error(`bad blob digest ${digest}`);
    return join(this.dir, hex);
  }

  /** Whether blob `digest` is stored (from memory: only this store adds and removes blobs). */
  async has(digest: string): Promise<boolean> {
    this.known ??= this.list().then((l) => new Set(l));
    return (await this.known).has(digest);
  }

  /** Records that `digest` became visible (BlobBatch.commit). */
  async added(digest: string): Promise<void> {
    this.known ??= this.list().then((l) => new Set(l));
    (await this.known).add(digest);
  }

  /** Every stored blob's digest. */
  async list(): Promise<string[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    return names.filter((n) => HEX.test(n)).map((n) => `sha256:${n}`);
  }

  /** Removes a blob; its size when it existed, else 0. */
  async remove(digest: string): Promise<number> {
    const p = this.path(digest);
    const st = await stat(p).catch(() => undefined);
    await rm(p, { force: true });
    (await this.known)?.delete(digest);
    return st?.size ?? 0;
  }

  batch(): BlobBatch {
    return new BlobBatch(this);
  }
}

/**
 * Blobs written together and made visible together (one filesystem sync for
 * the lot instead of an fsync per file). Abort (or a crash) leaves nothing
 * but temporary files.
 */
export class BlobBatch implements BlobSink {
  private readonly pending = new Map<string, string>(); // digest → temp file
  private readonly temps = new Set<string>();
  /** Blobs this batch found already stored (no new bytes kept). */
  reused = 0;
  /** Blobs this batch added to the store (known after commit). */
  added = 0;

  constructor(private readonly store: BlobStore) {}

  /**
   * Copies `source` into a blob, hashing on the way; `expect` (a digest)
   * makes a mismatch an error. Returns the digest and size of what was read.
   */
  async write(source: ByteSource, expect?: string): Promise<BlobRef> {
    return this.store_((tfd, hash) => {
      let size = 0;
      return (async () => {
        for await (const chunk of source) {
          const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
          hash.update(b);
          size += b.length;
          await writeAll(tfd, b, b.length);
        }
        return size;
      })();
    }, expect);
  }

  /**
   * Copies the open file `fd` (from its start to its end) into a blob.
   * `onBytes` counts progress.
   */
  async writeFd(fd: number, onBytes?: (n: number) => void): Promise<BlobRef> {
    return this.store_(async (tfd, hash) => {
      const buf = takeBuffer();
      try {
        let pos = 0;
        for (;;) {
          const n = await readFd(fd, buf, BUFFER_SIZE, pos);
          if (n === 0) return pos;
          hash.update(buf.subarray(0, n));
          await writeAll(tfd, buf, n);
          pos += n;
          onBytes?.(n);
        }
      } finally {
        releaseBuffer(buf);
      }
    });
  }

  private async store_(
    copy: (tfd: number, hash: Hash) => Promise<number>,
    expect?: string,
  ): Promise<BlobRef> {
    const tmp = join(this.store.tmpDir, tmpName("blob"));
    this.temps.add(tmp);
    const hash = createHash("sha256");
    let size: number;
    const tfd = await openFd(tmp, "wx", 0o444);
    try {
      size = await copy(tfd, hash);
    } catch (err) {
      await closeFd(tfd);
      await this.drop(tmp);
      throw err;
    }
    await closeFd(tfd);
    const digest = `sha256:${hash.digest("hex")}`;
    if (expect !== undefined && expect !== digest) {
      await this.drop(tmp);
      throw new Error(`content does not match its digest ${expect} (got ${digest})`);
    }
    if (this.pending.has(digest) || (await this.store.has(digest))) {
      this.reused++;
      await this.drop(tmp);
    } else {
      this.pending.set(digest, tmp);
    }
    return { digest, size };
  }

  private async drop(tmp: string): Promise<void> {
    this.temps.delete(tmp);
    await rm(tmp, { force: true });
  }

  /** Makes every blob of the batch durable and visible. */
  async commit(): Promise<void> {
    if (this.pending.size === 0) return;
    await syncFilesystem(this.store.tmpDir);
    for (const [digest, tmp] of this.pending) {
      await rename(tmp, this.store.path(digest));
      await this.store.added(digest);
      this.temps.delete(tmp);
      this.added++;
    }
    this.pending.clear();
    await fsyncDir(this.store.dir);
  }

  /** Removes the temporary files of blobs not committed. */
  async abort(): Promise<void> {
    await Promise.all([...this.temps].map((t) => rm(t, { force: true })));
    this.temps.clear();
    this.pending.clear();
  }
}
