import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { type FileHandle, open, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { finished } from "node:stream/promises";
import { pack } from "tar-stream";
import { throwIfAborted } from "../errors.ts";
import { tmpName } from "./fs-util.ts";
import type { ImageStore } from "./image-store.ts";
import type { Entry } from "./manifest.ts";
import { OCI_ARCH } from "./oci-import.ts";
import { bin } from "./paths.ts";

const CHUNK = 1024 * 1024;

/** An export being streamed: its exact size, then its bytes. `chunks` cleans up when it ends. */
export interface ExportStream {
  totalBytes: number;
  chunks: AsyncGenerator<Buffer>;
}

function tarName(e: Entry): string {
  // Tar names are UTF-8; bytes that are not become U+FFFD (see docs/DECISIONS.md, Images).
  return bin(e.path).toString("utf8") + (e.type === "dir" ? "/" : "");
}

/**
 * Writes `entries` (image entries in canonical order; the root is left out)
 * as one uncompressed tar layer into `file`, file contents read from the
 * store's blobs; returns the layer's digest and size. The bytes depend on
 * the entries only, so the same entries always give the same digest.
 */
export async function writeLayer(
  store: ImageStore,
  entries: Iterable<Entry>,
  file: string,
  signal?: AbortSignal,
): Promise<{ digest: string; size: number }> {
  const p = pack();
  const out = createWriteStream(file);
  const hash = createHash("sha256");
  let size = 0;
  p.on("data", (c: unknown) => {
    hash.update(c as Buffer);
    size += (c as Buffer).length;
  });
  p.pipe(out as unknown as NodeJS.WritableStream);
  const done = finished(out);
  for (const e of entries) {
    throwIfAborted(signal);
    if (e.path === "") continue;
    const header = {
      name: tarName(e),
      mode: e.mode,
      uid: e.uid,
      gid: e.gid,
      mtime: new Date(Number(e.mtimeNs / 1_000_000n)),
    };
    if (e.type === "dir") {
      p.entry({ ...header, type: "directory" });
    } else if (e.type === "symlink") {
      p.entry({ ...header, type: "symlink", linkname: bin(e.target ?? "").toString("utf8") });
    } else {
      const sink = p.entry({ ...header, type: "file", size: e.size });
      const src = createReadStream(store.blobs.path(e.digest ?? ""), { highWaterMark: CHUNK });
      await copyInto(src, sink);
    }
  }
  p.finalize();
  await done;
  return { digest: `sha256:${hash.digest("hex")}`, size };
}

/** A JSON document as a blob: its bytes and their digest. */
export function jsonBlob(obj: unknown): { bytes: Buffer; digest: string } {
  const bytes = Buffer.from(JSON.stringify(obj));
  return { bytes, digest: `sha256:${createHash("sha256").update(bytes).digest("hex")}` };
}

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
export const OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar";

/**
 * An OCI image config blob for uncompressed `layers` (their digests are the
 * diff_ids); `extra` adds top-level fields (consumers ignore unknown ones).
 */
export function imageConfig(
  layers: { digest: string }[],
  opts: { createdAtMs?: number; extra?: Record<string, unknown> } = {},
): { bytes: Buffer; digest: string } {
  return jsonBlob({
    ...(opts.createdAtMs !== undefined
      ? { created: new Date(opts.createdAtMs).toISOString() }
      : {}),
    architecture: OCI_ARCH,
    os: "linux",
    config: {},
    rootfs: { type: "layers", diff_ids: layers.map((l) => l.digest) },
    ...opts.extra,
  });
}

/** An OCI image manifest blob: `config` and uncompressed tar `layers`, in order. */
export function imageManifest(
  config: { bytes: Buffer; digest: string },
  layers: { digest: string; size: number }[],
  annotations?: Record<string, string>,
): { bytes: Buffer; digest: string } {
  return jsonBlob({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: config.digest, size: config.bytes.length },
    layers: layers.map((l) => ({ mediaType: OCI_LAYER_TAR, digest: l.digest, size: l.size })),
    ...(annotations ? { annotations } : {}),
  });
}

/** Bytes a tar entry of `size` bytes takes (header plus padded data). */
function tarBytes(size: number): number {
  return 512 + Math.ceil(size / 512) * 512;
}

/**
 * Exports image `id` as an OCI image archive (an OCI image layout in a tar:
 * `oci-layout`, `index.json`, and blobs: one uncompressed layer, the config,
 * the manifest). The layer is built into a temporary file first (under the
 * store's shared lock); streaming then reads that file, so a slow reader
 * never holds the store.
 */
export async function exportImage(
  store: ImageStore,
  id: string,
  signal?: AbortSignal,
): Promise<ExportStream> {
  const layerFile = join(store.tmpDir, tmpName("export"));
  let fh: FileHandle | undefined;
  try {
    const meta = await store.lock.shared(async () => {
      await store.get(id);
      const m = await store.readMeta(id);
      const entries = (await store.manifest(id)).entries;
      const layer = await writeLayer(store, entries, layerFile, signal);
      return { layer, createdAtMs: m?.createdAtMs ?? 0, fh: await open(layerFile, "r") };
    });
    fh = meta.fh;
    await rm(layerFile, { force: true }); // the open handle keeps the bytes
    const { layer } = meta;
    const config = imageConfig([layer], { createdAtMs: meta.createdAtMs });
    const manifest = imageManifest(config, [layer]);
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.index.v1+json",
        manifests: [
          {
            mediaType: OCI_MANIFEST,
            digest: manifest.digest,
            size: manifest.bytes.length,
            annotations: { "org.opencontainers.image.ref.name": id },
          },
        ],
      }),
    );
    const layout = Buffer.from(JSON.stringify({ imageLayoutVersion: "1.0.0" }));
    const small: [string, Buffer][] = [
      ["oci-layout", layout],
      ["index.json", index],
      [`blobs/sha256/${config.digest.slice(7)}`, config.bytes],
      [`blobs/sha256/${manifest.digest.slice(7)}`, manifest.bytes],
    ];
    const total =
      small.reduce((n, [, b]) => n + tarBytes(b.length), 0) + tarBytes(layer.size) + 1024;
    const chunks = archiveChunks(small, layer, meta.fh);
    fh = undefined;
    return { totalBytes: total, chunks };
  } catch (err) {
    await fh?.close();
    await rm(layerFile, { force: true });
    throw err;
  }
}

async function* archiveChunks(
  small: [string, Buffer][],
  layer: { digest: string; size: number },
  fh: FileHandle,
): AsyncGenerator<Buffer> {
  const p = pack();
  try {
    const feed = (async () => {
      for (const [name, bytes] of small) p.entry({ name, mode: 0o644, mtime: new Date(0) }, bytes);
      const sink = p.entry({
        name: `blobs/sha256/${layer.digest.slice(7)}`,
        mode: 0o644,
        size: layer.size,
        mtime: new Date(0),
      });
      const src = fh.createReadStream({ start: 0, highWaterMark: CHUNK, autoClose: false });
      await copyInto(src, sink);
      p.finalize();
    })();
    feed.catch((err: unknown) => p.destroy(err as Error));
    for await (const chunk of p) yield chunk as Buffer;
    await feed;
  } finally {
    p.destroy();
    await fh.close();
  }
}

type TarSink = ReturnType<ReturnType<typeof pack>["entry"]>;

/** Pipes `src` into a tar entry's `sink`; resolves when the entry is written. */
function copyInto(src: Readable, sink: TarSink): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    src.once("error", reject);
    sink.once("error", reject);
    sink.once("finish", () => resolve());
    src.pipe(sink as unknown as NodeJS.WritableStream);
  });
}
