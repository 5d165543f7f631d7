import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { finished } from "node:stream/promises";
import type { ReadableStream as WebReadable } from "node:stream/web";
import {
  NotFoundError,
  ResourceExhaustedError,
  TaskRouterError,
  UnavailableError,
} from "../../errors.ts";
import { IMAGE_INPUT } from "../../limits.ts";
import { type Metrics, NO_METRICS } from "../../metrics/metrics.ts";
import type { BlobBatch } from "../blob-store.ts";
import { errCode } from "../fs-util.ts";
import { checkImageId, type ImageStore } from "../image-store.ts";
import { TreeBuilder } from "../layers.ts";
import type { Entry } from "../manifest.ts";
import type { TransferOptions, TransferResult } from "../remote.ts";
import { atMost, readBounded } from "./bounded.ts";
import { type RegistryClient, TransientError } from "./client.ts";
import {
  badImage,
  badImageError,
  type OciDescriptor,
  parseConfig,
  parseOciManifest,
} from "./layout.ts";
import { Inflight, type Progress, type PushedMarks } from "./transfer.ts";

/**
 * Errnos of this machine's disk (storing what arrived), not of the network:
 * a retry would not cure them, so the pull fails at once.
 */
const LOCAL = new Set(["ENOSPC", "EDQUOT", "EROFS", "EIO", "EFBIG", "EMFILE", "ENFILE", "EACCES"]);

/**
 * Reading a body failed part-way: the registry went away, worth a retry;
 * unless storing it failed (a full or read-only disk: ResourceExhausted when
 * full, else the error as it is).
 */
function transient(err: unknown, what: string): unknown {
  if (err instanceof TaskRouterError) return err;
  const code = errCode(err);
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new ResourceExhaustedError(`${what}: no space to store it (${code})`);
  }
  if (code && LOCAL.has(code)) return err;
  return new TransientError(`${what}: ${(err as Error).message}`);
}

/**
 * Pulls images from one registry repository into the store.
 *
 * Contract: `pull(id)` resolves once image `id` is in the store, complete:
 * its manifest and config are fetched, the config's tree must hash to the
 * id, the file layers holding a blob the store lacks are downloaded (only
 * those) and each is checked against its digest and size, every file of the
 * tree must then be present, and only then are the blobs committed and the
 * image published (atomically, by the store). A failure leaves nothing
 * visible but blobs of the batch's temporary files (removed by gc or the
 * next start). Already in the store: resolves at once, nothing moved.
 * NotFound when the registry has no image `id`; a second call for the same
 * id joins the first. Runs under the store's shared lock (gc waits). Each
 * pull and the blob bytes it downloads are reported to `metrics`
 * (Metrics.registryTransfer, registryBytes).
 */
export class Puller {
  private readonly inflight: Inflight;

  constructor(
    private readonly store: ImageStore,
    private readonly client: RegistryClient,
    private readonly marks: PushedMarks,
    private readonly closing: AbortSignal,
    metrics: Metrics = NO_METRICS,
  ) {
    this.inflight = new Inflight("pull", metrics);
  }

  pull(id: string, opts: TransferOptions = {}): Promise<TransferResult> {
    checkImageId(id);
    return this.inflight.run(id, opts, (progress) => this.transfer(id, progress));
  }

  private async transfer(id: string, progress: Progress): Promise<TransferResult> {
    const c = this.client;
    const signal = this.closing;
    const reference = `${c.name}:${id}`;
    if (await this.store.readMeta(id)) return progress.result(reference);
    let manBytes: Buffer;
    try {
      manBytes = await c.retrying("GET manifest", () => c.getManifest(id, signal), signal);
    } catch (err) {
      if (err instanceof NotFoundError) {
        throw new NotFoundError(`image ${id} not found (nor in registry ${c.name})`);
      }
      throw err;
    }
    const oci = parseOciManifest(manBytes, reference);
    const configBytes = await c.retrying(
      "GET config",
      () => this.small(oci.config, progress, reference),
      signal,
    );
    const { manifest, groups } = parseConfig(configBytes, id, oci.layers.length, reference);
    return this.store.lock.shared(async () => {
      const batch = this.store.blobs.batch();
      try {
        const got = new Set<string>();
        const lacks = async (g: Entry[]) => {
          for (const e of g) {
            const d = e.digest ?? "";
            if (!got.has(d) && !(await this.store.blobs.has(d))) return true;
          }
          return false;
        };
        const need: number[] = [];
        for (const [i, g] of groups.entries()) if (await lacks(g)) need.push(i);
        const p = progress.p;
        p.blobsTotal = need.length + 2;
        p.blobsSkipped = oci.layers.length - need.length;
        p.blobsDone = 2; // manifest and config
        for (const i of need) p.bytesTotal += (oci.layers[i] as OciDescriptor).size;
        progress.report(true);
        for (const i of need) {
          const layer = oci.layers[i] as OciDescriptor;
          const start = p.bytesDone;
          await c.retrying(
            "GET layer",
            async () => {
              p.bytesDone = start;
              const group = groups[i] as Entry[];
              const most = layerBound(group);
              if (layer.size > most) {
                badImage(
                  reference,
                  `its layer ${layer.digest} says ${layer.size} bytes, over the ${most} its files need`,
                );
              }
              for (const d of await this.layer(layer, group.length, batch, progress, reference)) {
                got.add(d);
              }
            },
            signal,
          );
          p.blobsDone++;
        }
        for (const g of groups) {
          if (await lacks(g)) {
            throw new UnavailableError(`${reference}: a layer lacks files its tree lists`);
          }
        }
        await batch.commit();
      } catch (err) {
        await batch.abort();
        throw err;
      }
      const stored = await this.store.publish(manifest, { kind: "default" }, `pull ${reference}`);
      if (stored !== id) throw new Error(`pulled ${reference} but stored ${stored}`);
      await this.marks.mark(id);
      return progress.result(reference);
    });
  }

  /**
   * The config, checked against its descriptor; one over IMAGE_INPUT.configBytes,
   * or a body longer than its descriptor says, is a bad image (never read
   * further).
   */
  private async small(d: OciDescriptor, progress: Progress, ref: string): Promise<Buffer> {
    const cap = IMAGE_INPUT.configBytes;
    if (d.size > cap) badImage(ref, `its config is ${d.size} bytes, over ${cap}`);
    const res = await this.client.getBlob(d.digest, this.closing);
    let bytes: Buffer;
    try {
      bytes = await readBounded(res, d.size, () =>
        badImageError(ref, `its config is larger than the ${d.size} bytes its manifest says`),
      );
    } catch (err) {
      throw transient(err, `GET ${d.digest}`);
    }
    progress.moved(bytes.length);
    const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
    if (digest !== d.digest || bytes.length !== d.size) {
      throw new UnavailableError(`registry blob ${d.digest} does not match its digest`);
    }
    return bytes;
  }

  /**
   * Downloads one file layer, storing its files through `batch` as the bytes
   * arrive, and checks the whole layer against its digest and size: a byte
   * past its size stops it at once (a bad image), the digest is checked at
   * its end. It holds `files` entries (its group's files): one more is a bad
   * image too. Returns the digests of the files it held.
   */
  private async layer(
    d: OciDescriptor,
    files: number,
    batch: BlobBatch,
    progress: Progress,
    ref: string,
  ): Promise<string[]> {
    const res = await this.client.getBlob(d.digest, this.closing);
    if (!res.body) throw new TransientError(`GET ${d.digest}: no body`);
    const hash = createHash("sha256");
    let size = 0;
    let over: Error | undefined; // wins over the tar parser's error it causes (not a retry)
    const tooBig = () => {
      over = badImageError(
        ref,
        `its layer ${d.digest} is larger than the ${d.size} bytes its manifest says`,
      );
      return over;
    };
    const tee = atMost(d.size, tooBig, (chunk) => {
      hash.update(chunk);
      size += chunk.length;
      progress.moved(chunk.length);
      progress.bytes(chunk.length);
    });
    const src = Readable.fromWeb(res.body as WebReadable<Uint8Array>);
    src.once("error", (err) => tee.destroy(err));
    src.pipe(tee);
    const tree = new TreeBuilder();
    try {
      let entries = 0;
      const onEntry = () => {
        if (++entries > files)
          badImage(ref, `its layer ${d.digest} holds more than ${files} files`);
      };
      await tree.apply(tee, batch, { whiteouts: false, onEntry });
      tee.resume(); // zero blocks after the tar's end
      await finished(tee);
    } catch (err) {
      src.destroy();
      throw over ?? transient(err, `GET ${d.digest}`);
    }
    const digest = `sha256:${hash.digest("hex")}`;
    if (digest !== d.digest || size !== d.size) {
      throw new UnavailableError(`registry layer ${d.digest} does not match its digest`);
    }
    return tree
      .manifest()
      .entries.filter((e) => e.type === "file")
      .map((e) => e.digest ?? "");
  }
}

/**
 * The most bytes a tar layer of `group`'s files can take as this router's
 * push writes it (oci-export.ts `writeLayer`, tar-stream): per file a header,
 * its bytes padded to 512, and room for a pax header holding its path; then
 * the end blocks and a record's padding. The group comes from the config,
 * which the image id vouches for, so a registry's larger size is refused
 * before anything is read.
 */
export function layerBound(group: readonly Entry[]): number {
  const pad = (n: number) => Math.ceil(n / 512) * 512;
  let n = 1024 + 10240;
  for (const e of group) n += 512 + pad(e.size) + 512 + pad(2 * e.path.length + 64);
  return n;
}
