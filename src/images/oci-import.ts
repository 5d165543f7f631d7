import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, open, readFile, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { type Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { extract } from "tar-stream";
import { InvalidArgumentError, throwIfAborted } from "../errors.ts";
import { IMAGE_INPUT } from "../limits.ts";
import { errCode, tmpName } from "./fs-util.ts";
import type { ImageStore } from "./image-store.ts";
import { TreeBuilder, tarPath } from "./layers.ts";
import { bin } from "./paths.ts";
import type { TtlPolicy } from "./ttl.ts";

/** What one import may read (see IMAGE_INPUT): past either, the import is refused. */
export interface ImportLimits {
  /** Bytes inflated from gzip, the archive's and its layers' together. */
  inflatedBytes: number;
  /** Tar entries, the archive's and all its layers' together. */
  entries: number;
}

export interface ImportOptions {
  /** "archive": OCI image layout or `docker save` tar; "tree": a tar of a plain directory. */
  format: "archive" | "tree";
  ttl: TtlPolicy;
  source: string;
  signal?: AbortSignal;
  /** IMAGE_INPUT's import limits by default (tests lower them). */
  limits?: ImportLimits;
}

/**
 * What an import has read so far against its limits. `entry()` counts a tar
 * entry; `inflated()` is a pass-through counting the bytes read from layers
 * (inflated when gzip), `add` counts others (a layer's digest check). Every
 * read of a layer counts, so a layer listed many times counts as often. Past
 * a limit: InvalidArgument (a gzip bomb or an archive of millions of entries
 * is refused, whatever it would have made).
 */
class Budget {
  private bytes = 0;
  private count = 0;

  constructor(private readonly limits: ImportLimits) {}

  entry(): void {
    if (++this.count > this.limits.entries) {
      throw new InvalidArgumentError(
        `archive: more than ${this.limits.entries} entries (the limit of an import)`,
      );
    }
  }

  /** @throws InvalidArgumentError past the limit */
  add(n: number): void {
    this.bytes += n;
    const max = this.limits.inflatedBytes;
    if (this.bytes > max) {
      throw new InvalidArgumentError(
        `archive: more than ${max} bytes to read, inflated (the limit of an import)`,
      );
    }
  }

  inflated(): Transform {
    return new Transform({
      transform: (chunk: Buffer, _enc, cb) => {
        try {
          this.add(chunk.length);
        } catch (err) {
          return cb(err as Error);
        }
        cb(null, chunk);
      },
    });
  }
}

/**
 * A readable of `file`, gunzipped when it is gzip (the inflated bytes counted
 * by `budget`); zstd is refused (Node 20 cannot read it). Destroying it
 * closes the file.
 */
async function openMaybeCompressed(file: string, budget: Budget): Promise<Readable> {
  const fh = await open(file, "r");
  const head = Buffer.alloc(4);
  await fh.read(head, 0, 4, 0);
  await fh.close();
  const raw = createReadStream(file, { highWaterMark: 1024 * 1024 });
  if (head[0] === 0x1f && head[1] === 0x8b) {
    const gz = createGunzip();
    const counted = budget.inflated();
    raw.once("error", (err) => gz.destroy(err));
    gz.once("error", (err) => counted.destroy(err));
    counted.once("close", () => {
      raw.destroy();
      gz.destroy();
    });
    return raw.pipe(gz).pipe(counted);
  }
  if (head.readUInt32LE(0) === 0xfd2fb528) {
    raw.destroy();
    throw new InvalidArgumentError("zstd-compressed layers are not supported (use gzip or none)");
  }
  const counted = budget.inflated();
  raw.once("error", (err) => counted.destroy(err));
  counted.once("close", () => raw.destroy());
  return raw.pipe(counted);
}

async function sha256File(file: string, budget: Budget): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) {
    budget.add((chunk as Buffer).length);
    hash.update(chunk as Buffer);
  }
  return `sha256:${hash.digest("hex")}`;
}

/** Unpacks the regular files of an outer archive into `dir` (names kept inside it). */
async function extractOuter(file: string, dir: string, budget: Budget): Promise<void> {
  const ex = extract();
  const src = await openMaybeCompressed(file, budget);
  src.once("error", (err) => ex.destroy(err));
  src.pipe(ex as unknown as NodeJS.WritableStream);
  try {
    for await (const entry of ex) {
      budget.entry();
      const h = entry.header;
      if (h.type !== "file" && h.type !== "contiguous-file") {
        entry.resume();
        continue;
      }
      const rel = tarPath(h.name);
      if (rel === "") {
        entry.resume();
        continue;
      }
      const dest = Buffer.concat([Buffer.from(`${dir}/`), bin(rel)]);
      await mkdir(dirname(dest.toString("latin1")), { recursive: true });
      await pipeline(entry, createWriteStream(dest));
    }
  } finally {
    src.destroy();
  }
}

interface Descriptor {
  mediaType?: string;
  digest?: string;
  platform?: { os?: string; architecture?: string };
}

const GOARCH: Record<string, string> = { x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386" };
/** This machine's architecture as OCI names it (GOARCH). */
export const OCI_ARCH = GOARCH[process.arch] ?? process.arch;

/** An archive's JSON document (index, manifest): at most IMAGE_INPUT.manifestBytes. */
async function readJson<T>(file: string): Promise<T> {
  const max = IMAGE_INPUT.manifestBytes;
  const name = file.split("/").slice(-3).join("/");
  const size = await stat(file).then(
    (st) => st.size,
    () => 0,
  );
  if (size > max) throw new InvalidArgumentError(`archive: ${name} is over ${max} bytes`);
  try {
    return JSON.parse(await readFile(file, "utf8")) as T;
  } catch (err) {
    const what = errCode(err) === "ENOENT" ? "missing" : "not valid JSON";
    throw new InvalidArgumentError(`archive: ${name} is ${what}`);
  }
}

function blobPath(dir: string, digest: string | undefined): string {
  const m = /^(sha256):([0-9a-f]{64})$/.exec(digest ?? "");
  if (!m) throw new InvalidArgumentError(`archive: unsupported digest ${JSON.stringify(digest)}`);
  return join(dir, "blobs", m[1] as string, m[2] as string);
}

/** The layer files (in order) and their digests of an unpacked OCI layout or docker save. */
async function findLayers(dir: string): Promise<{ file: string; digest?: string }[]> {
  const hasOci = await readFile(join(dir, "oci-layout")).then(
    () => true,
    () => false,
  );
  if (hasOci) {
    let desc: Descriptor | undefined;
    let doc = await readJson<{ manifests?: Descriptor[] }>(join(dir, "index.json"));
    for (let depth = 0; depth < 4; depth++) {
      const list = doc.manifests ?? [];
      desc =
        list.find((m) => m.platform?.os === "linux" && m.platform.architecture === OCI_ARCH) ??
        list.find((m) => !m.platform || m.platform.os === "linux") ??
        list[0];
      if (!desc) throw new InvalidArgumentError("archive: the OCI index lists no image");
      if (!/index/.test(desc.mediaType ?? "")) break;
      doc = await readJson(blobPath(dir, desc.digest));
    }
    const manifest = await readJson<{ layers?: Descriptor[] }>(blobPath(dir, desc?.digest));
    return (manifest.layers ?? []).map((l) => ({
      file: blobPath(dir, l.digest),
      digest: l.digest as string,
    }));
  }
  const docker = await readJson<{ Layers?: string[] }[]>(join(dir, "manifest.json")).catch(() => {
    throw new InvalidArgumentError(
      "not an image archive: no oci-layout (OCI image layout) or manifest.json (docker save)",
    );
  });
  const first = docker[0];
  if (!first?.Layers) throw new InvalidArgumentError("archive: manifest.json lists no image");
  return first.Layers.map((l) => {
    const file = join(dir, bin(tarPath(l)).toString("utf8"));
    const m = /blobs\/sha256\/([0-9a-f]{64})$/.exec(l);
    return m ? { file, digest: `sha256:${m[1]}` } : { file };
  });
}

/** IMAGE_INPUT's limits of one import. */
const IMPORT_LIMITS: ImportLimits = {
  inflatedBytes: IMAGE_INPUT.importInflatedBytes,
  entries: IMAGE_INPUT.importEntries,
};

/**
 * Imports the archive in `file` as an image and returns its id. Layers are
 * applied in order with their whiteouts; layer digests are verified; what
 * gzip inflates and the count of tar entries are bounded (`opts.limits`). Runs
 * under the store's shared lock; nothing is visible until the image is
 * published, and a failure leaves only debris that gc removes.
 */
export async function importImage(
  store: ImageStore,
  file: string,
  opts: ImportOptions,
): Promise<string> {
  const budget = new Budget(opts.limits ?? IMPORT_LIMITS);
  const onEntry = () => budget.entry();
  return store.lock.shared(async () => {
    const batch = store.blobs.batch();
    const tree = new TreeBuilder();
    const work = join(store.tmpDir, tmpName("import"));
    try {
      if (opts.format === "tree") {
        const tar = await openMaybeCompressed(file, budget);
        await tree.apply(tar, batch, { whiteouts: false, onEntry });
      } else {
        await extractOuter(file, work, budget);
        for (const layer of await findLayers(work)) {
          throwIfAborted(opts.signal);
          if (layer.digest && (await sha256File(layer.file, budget)) !== layer.digest) {
            throw new InvalidArgumentError(
              `archive: layer ${layer.digest} does not match its digest`,
            );
          }
          const tar = await openMaybeCompressed(layer.file, budget);
          await tree.apply(tar, batch, { whiteouts: true, onEntry });
        }
      }
      throwIfAborted(opts.signal);
      await batch.commit();
    } catch (err) {
      await batch.abort();
      if (errCode(err) === "ENOENT")
        throw new InvalidArgumentError("archive: a layer it lists is missing");
      if (
        err instanceof Error &&
        !("kind" in err) &&
        /tar|header|gzip|unexpected end/i.test(err.message)
      ) {
        throw new InvalidArgumentError(`not a valid archive: ${err.message}`);
      }
      throw err;
    } finally {
      await rm(work, { recursive: true, force: true });
    }
    return store.publish(tree.manifest(), opts.ttl, opts.source);
  });
}

/**
 * Imports an image archive arriving as `chunks`: spooled into a temporary
 * file of the store (held open, so gc cannot take it away, and removed
 * after), then imported (`importImage`). Returns the image id.
 */
export async function importChunks(
  store: ImageStore,
  chunks: AsyncIterable<Uint8Array>,
  opts: ImportOptions,
): Promise<string> {
  const file = join(store.tmpDir, tmpName("upload"));
  const fh = await open(file, "w+", 0o600);
  try {
    for await (const c of chunks) {
      throwIfAborted(opts.signal);
      await fh.write(c);
    }
    return await importImage(store, `/proc/self/fd/${fh.fd}`, opts);
  } finally {
    await fh.close();
    await rm(file, { force: true });
  }
}
