import { readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import type { ImageStore } from "./image-store.ts";
import { IMAGE_ID } from "./manifest.ts";

export interface GcResult {
  imagesRemoved: string[];
  blobsRemoved: number;
  bytesFreed: number;
}

/**
 * Collects garbage under the store's exclusive lock:
 * 1. images whose expiry has passed and that nothing uses (mounts, task roots);
 * 2. metadata, idempotency keys and unpack caches of images that no longer exist;
 * 3. blobs no remaining image references (a sealed image's blobs live and go
 *    with its own directory: gc needs no key to collect them);
 * 4. temporary files (debris of crashed or failed writes: no writer runs now).
 */
export async function collectGarbage(store: ImageStore): Promise<GcResult> {
  return store.lock.exclusive(async () => {
    const result: GcResult = { imagesRemoved: [], blobsRemoved: 0, bytesFreed: 0 };
    const live = new Set<string>();
    const sealed = new Set<string>();
    for (const meta of await store.list({ withSealed: true })) {
      if (store.expired(meta) && store.usersOf(meta.id) === 0) {
        await store.removeLocked(meta.id);
        result.imagesRemoved.push(meta.id);
      } else {
        live.add(meta.id);
        if (await store.sealed.has(meta.id)) sealed.add(meta.id);
      }
    }
    await removeStale(store.metaDir, (n) => n.replace(/\.json$/, ""), live);
    await removeStale(store.unpackedDir, (n) => n, live);
    await removeStale(store.sealed.dir, (n) => n, live);
    const keysDir = join(store.root, "keys");
    for (const n of await readdir(keysDir).catch(() => [] as string[])) {
      const rec = await readFile(join(keysDir, n), "utf8")
        .then((s) => JSON.parse(s) as { imageId?: string })
        .catch(() => undefined);
      if (!rec?.imageId || !live.has(rec.imageId)) await rm(join(keysDir, n), { force: true });
    }
    const referenced = new Set<string>();
    for (const id of live) {
      if (sealed.has(id)) continue;
      for (const e of (await store.manifest(id)).entries) if (e.digest) referenced.add(e.digest);
    }
    for (const digest of await store.blobs.list()) {
      if (referenced.has(digest)) continue;
      result.bytesFreed += await store.blobs.remove(digest);
      result.blobsRemoved++;
    }
    for (const n of await readdir(store.tmpDir).catch(() => [] as string[])) {
      await rm(join(store.tmpDir, n), { recursive: true, force: true });
    }
    return result;
  });
}

async function removeStale(dir: string, idOf: (name: string) => string, live: Set<string>) {
  for (const n of await readdir(dir).catch(() => [] as string[])) {
    const id = idOf(n);
    if (IMAGE_ID.test(id) && live.has(id)) continue;
    await rm(join(dir, n), { recursive: true, force: true });
  }
}
