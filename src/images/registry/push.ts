import { type FileHandle, open, rm } from "node:fs/promises";
import { join } from "node:path";
import { NotFoundError, throwIfAborted } from "../../errors.ts";
import { type Metrics, NO_METRICS } from "../../metrics/metrics.ts";
import { tmpName } from "../fs-util.ts";
import type { ImageStore } from "../image-store.ts";
import type { Entry } from "../manifest.ts";
import { imageConfig, imageManifest, writeLayer } from "../oci-export.ts";
import type { TransferOptions, TransferResult } from "../remote.ts";
import type { RegistryClient } from "./client.ts";
import { CONFIG_KEY, fileGroups, layerKey, treeEntries, treeInfo } from "./layout.ts";
import { Inflight, type Progress, type PushedMarks } from "./transfer.ts";

const CHUNK = 1024 * 1024;

/** The bytes of open file `fh` from its start, counted into `onBytes`. */
async function* fileBytes(fh: FileHandle, onBytes: (n: number) => void): AsyncGenerator<Buffer> {
  for (let pos = 0; ; ) {
    const buf = Buffer.allocUnsafe(CHUNK);
    const { bytesRead } = await fh.read(buf, 0, CHUNK, pos);
    if (bytesRead === 0) return;
    pos += bytesRead;
    onBytes(bytesRead);
    yield buf.subarray(0, bytesRead);
  }
}

/**
 * Pushes images of the store to one registry repository, as layout.ts lays
 * them out, tagged with their ids.
 *
 * Contract: `push(id)` resolves once the registry has the whole image (the
 * manifest goes last, after every blob it names, so a pull never sees a
 * half image) and the image is marked pushed; a second call for the same id
 * joins the first. Nothing the registry has is sent: the tag is checked
 * first, then each blob (HEAD) before it is uploaded. Each registry
 * operation is retried with backoff (client.retrying); an interrupted blob
 * upload starts over, blobs already uploaded are skipped on the next try.
 * NotFound when the store has no image `id`. Each push and the blob bytes
 * it uploads are reported to `metrics` (Metrics.registryTransfer,
 * registryBytes).
 */
export class Pusher {
  private readonly inflight: Inflight;
  /** Layer key → digest and size of its tar (saves building a layer to learn its digest). */
  private readonly layers = new Map<string, { digest: string; size: number }>();

  constructor(
    private readonly store: ImageStore,
    private readonly client: RegistryClient,
    private readonly marks: PushedMarks,
    private readonly closing: AbortSignal,
    metrics: Metrics = NO_METRICS,
  ) {
    this.inflight = new Inflight("push", metrics);
  }

  push(id: string, opts: TransferOptions = {}): Promise<TransferResult> {
    return this.inflight.run(id, opts, (progress) => this.transfer(id, progress));
  }

  private async transfer(id: string, progress: Progress): Promise<TransferResult> {
    const signal = this.closing;
    const c = this.client;
    const reference = `${c.name}:${id}`;
    if (!(await this.store.readMeta(id))) throw new NotFoundError(`image ${id} not found`);
    const tree = await this.store.manifest(id);
    const groups = fileGroups(tree);
    const layers: Entry[][] = [...groups, treeEntries(tree)];
    const p = progress.p;
    p.blobsTotal = layers.length + 2;
    for (const e of tree.entries) p.bytesTotal += e.size;
    progress.report(true);
    if (await c.retrying("HEAD manifest", () => c.hasManifest(id, signal), signal)) {
      p.blobsSkipped = p.blobsTotal;
      await this.marks.mark(id);
      return progress.result(reference);
    }
    const descs: { digest: string; size: number }[] = [];
    for (const entries of layers) {
      throwIfAborted(signal);
      const content = entries.reduce((n, e) => n + e.size, 0);
      descs.push(await this.pushLayer(id, entries, content, progress));
    }
    const config = imageConfig(descs, { extra: { [CONFIG_KEY]: treeInfo(id, tree, groups) } });
    await this.pushSmall(config, progress);
    const manifest = imageManifest(config, descs);
    await c.retrying("PUT manifest", () => c.putManifest(id, manifest.bytes, signal), signal);
    p.blobsDone++;
    await this.marks.mark(id);
    return progress.result(reference);
  }

  /** Makes sure the registry has the layer of `entries`; returns its descriptor. */
  private async pushLayer(
    id: string,
    entries: Entry[],
    content: number,
    progress: Progress,
  ): Promise<{ digest: string; size: number }> {
    const c = this.client;
    const signal = this.closing;
    const key = layerKey(entries);
    const known = this.layers.get(key);
    const has = (digest: string) =>
      c.retrying("HEAD blob", () => c.blobSize(digest, signal), signal);
    if (known && (await has(known.digest)) !== undefined) {
      progress.p.blobsSkipped++;
      progress.bytes(content);
      return known;
    }
    const file = join(this.store.tmpDir, tmpName("push"));
    let fh: FileHandle | undefined;
    try {
      const desc = await this.store.lock.shared(async () => {
        if (!(await this.store.readMeta(id))) throw new NotFoundError(`image ${id} not found`);
        const d = await writeLayer(this.store, entries, file, signal);
        fh = await open(file, "r");
        return d;
      });
      await rm(file, { force: true }); // the open handle keeps the bytes
      this.layers.set(key, desc);
      if ((await has(desc.digest)) !== undefined) {
        progress.p.blobsSkipped++;
        progress.bytes(content);
        return desc;
      }
      const handle = fh as unknown as FileHandle;
      const start = progress.p.bytesDone;
      // Progress in content bytes: the tar's headers and padding are not counted.
      const scale = desc.size > 0 ? content / desc.size : 0;
      await c.retrying(
        "upload layer",
        () => {
          progress.p.bytesDone = start;
          return c.uploadBlob(
            desc.digest,
            () =>
              fileBytes(handle, (n) => {
                progress.moved(n);
                progress.bytes(n * scale);
              }),
            signal,
          );
        },
        signal,
      );
      progress.p.bytesDone = start + content;
      progress.p.blobsDone++;
      progress.report();
      return desc;
    } finally {
      await fh?.close();
      await rm(file, { force: true });
    }
  }

  /** Makes sure the registry has a small blob (the config). */
  private async pushSmall(blob: { bytes: Buffer; digest: string }, progress: Progress) {
    const c = this.client;
    const signal = this.closing;
    const size = await c.retrying("HEAD blob", () => c.blobSize(blob.digest, signal), signal);
    if (size !== undefined) {
      progress.p.blobsSkipped++;
      return;
    }
    await c.retrying(
      "upload config",
      () =>
        c.uploadBlob(
          blob.digest,
          () => {
            progress.moved(blob.bytes.length);
            return blob.bytes;
          },
          signal,
        ),
      signal,
    );
    progress.p.blobsDone++;
  }
}
