import { readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { errCode, writeFileAtomic } from "./fs-util.ts";
import { decodeManifest, imageIdOf, type Manifest } from "./manifest.ts";

/** How many manifests `read` keeps decoded. */
const CACHED = 32;

/**
 * The manifests of the plain images (those readable without a key) in
 * `dir`: `<id>.json`, the canonical bytes whose hash is the image id.
 *
 * Contract:
 * - `read` checks the bytes against the id (an Error naming a corrupt
 *   manifest when they differ) and resolves undefined when there is no
 *   file; the manifests read last are kept decoded (a manifest never
 *   changes under its id).
 * - `write` is atomic and durable (a temporary file in `tmpDir`, renamed);
 *   `remove` succeeds when there is nothing to remove.
 * - `ids` lists the names of the files there (not checked as ids).
 */
export class ManifestFiles {
  private readonly cache = new Map<string, Manifest>();

  constructor(
    readonly dir: string,
    private readonly tmpDir: string,
  ) {}

  private file(id: string): string {
    return join(this.dir, `${id}.json`);
  }

  /** Whether the manifest file of `id` can be read. */
  has(id: string): Promise<boolean> {
    return readFile(this.file(id)).then(
      () => true,
      () => false,
    );
  }

  /** The manifest of `id`, verified; undefined when there is none. */
  async read(id: string): Promise<Manifest | undefined> {
    const hit = this.cache.get(id);
    if (hit) return hit;
    let bytes: Buffer;
    try {
      bytes = await readFile(this.file(id));
    } catch (err) {
      if (errCode(err) !== "ENOENT") throw err;
      return undefined;
    }
    if (imageIdOf(bytes) !== id) throw new Error(`manifest of ${id} is corrupt`);
    const m = decodeManifest(bytes);
    if (this.cache.size >= CACHED) this.cache.delete(this.cache.keys().next().value as string);
    this.cache.set(id, m);
    return m;
  }

  /** Writes the manifest `bytes` of image `id`. */
  write(id: string, bytes: Buffer): Promise<void> {
    return writeFileAtomic(this.file(id), bytes, this.tmpDir);
  }

  async remove(id: string): Promise<void> {
    await rm(this.file(id), { force: true });
    this.cache.delete(id);
  }

  async ids(): Promise<string[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    return names.filter((n) => n.endsWith(".json")).map((n) => n.slice(0, -5));
  }
}
