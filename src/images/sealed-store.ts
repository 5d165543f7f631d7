import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { BlobRef, BlobSink } from "./blob-store.ts";
import type { Csek } from "./csek.ts";
import { closeFd, openFd } from "./fdio.ts";
import { errCode, fsyncDir, syncFilesystem, tmpName } from "./fs-util.ts";
import { decodeManifest, type Entry, IMAGE_ID, type Manifest } from "./manifest.ts";
import { blobName, decryptBlob, SealedBlobWriter } from "./sealed-blobs.ts";

/** Writes one regular file of an image being unpacked (the default copies its plain blob). */
export type FileWriter = (e: Entry, dest: Buffer) => Promise<void>;

/** A sealed image opened with its key: its tree, and how to write its files in plaintext. */
export interface SealedOpen {
  manifest: Manifest;
  writeFile: FileWriter;
  /** Zeroes the data key (when the call is done with the image). */
  dispose(): void;
}

/**
 * Images sealed with a customer-supplied key: `<images>/sealed/<id>/` holds
 * `manifest` (the envelope of csek.ts: the sealed data key and the sealed
 * tree) and `blobs/` (sealed-blobs.ts). Everything an image has is in its
 * directory, so removing the image removes its blobs, and gc needs no key
 * (nor a plaintext list of what the image references). The directory is
 * made under `tmp/` and renamed into place whole (after a filesystem sync):
 * an image exists once its directory does, never half.
 */
export class SealedImages {
  readonly dir: string;

  constructor(
    root: string,
    private readonly tmpDir: string,
  ) {
    this.dir = join(root, "sealed");
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  path(id: string): string {
    return join(this.dir, id);
  }

  async has(id: string): Promise<boolean> {
    return stat(join(this.path(id), "manifest")).then(
      () => true,
      () => false,
    );
  }

  /** The ids of every sealed image (and of debris with such a name). */
  async ids(): Promise<string[]> {
    return (await readdir(this.dir).catch(() => [] as string[])).filter((n) => IMAGE_ID.test(n));
  }

  /** A staging directory for a new sealed image, with a fresh random data key. */
  async stage(): Promise<SealedStage> {
    const dir = join(this.tmpDir, tmpName("sealed"));
    await mkdir(join(dir, "blobs"), { recursive: true, mode: 0o700 });
    return new SealedStage(dir);
  }

  /**
   * Opens sealed image `id` with `csek`: PermissionDenied when the key does
   * not open it, NotFound when it does not exist.
   */
  async open(id: string, csek: Csek): Promise<SealedOpen> {
    const dir = this.path(id);
    const file = await readFile(join(dir, "manifest")).catch((err: unknown) => {
      if (errCode(err) === "ENOENT") return undefined;
      throw err;
    });
    if (!file) throw new Error(`sealed image ${id} has no manifest`);
    const { dek, canonical } = csek.open(id, file);
    const manifest = decodeManifest(canonical);
    const writeFile: FileWriter = async (e, dest) => {
      const digest = e.digest ?? "";
      const out = await openFd(dest, "wx", 0o600);
      try {
        await decryptBlob(join(dir, "blobs", blobName(dek, digest)), dek, { ...e, digest }, out);
      } finally {
        await closeFd(out);
      }
    };
    return { manifest, writeFile, dispose: () => dek.fill(0) };
  }

  /** Removes the directory of `id` (its blobs with it). */
  async remove(id: string): Promise<void> {
    await rm(this.path(id), { recursive: true, force: true });
  }
}

/** A sealed image being made (see SealedImages.stage): blobs first, then `install`. */
export class SealedStage implements BlobSink {
  private readonly dek = randomBytes(32);
  private readonly writer: SealedBlobWriter;

  constructor(readonly dir: string) {
    this.writer = new SealedBlobWriter(join(dir, "blobs"), this.dek);
  }

  writeFd(fd: number, onBytes?: (n: number) => void): Promise<BlobRef> {
    return this.writer.writeFd(fd, onBytes);
  }

  /**
   * Seals `canonical` (the tree of image `id`) next to the blobs, makes the
   * lot durable (one filesystem sync) and renames the directory to `dest`.
   */
  async install(csek: Csek, id: string, canonical: Uint8Array, dest: string): Promise<void> {
    await writeFile(join(this.dir, "manifest"), csek.seal(id, this.dek, canonical), {
      mode: 0o400,
    });
    await syncFilesystem(this.dir);
    await rename(this.dir, dest);
    await fsyncDir(join(dest, ".."));
    this.dek.fill(0);
  }

  /** Removes what was staged (an abort, or an image that already exists). */
  async abort(): Promise<void> {
    this.dek.fill(0);
    await rm(this.dir, { recursive: true, force: true });
  }
}
