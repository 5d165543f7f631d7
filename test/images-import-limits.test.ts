/**
 * An ImportImage archive is bounded: what gzip inflates (the archive's and
 * its layers' bytes together) and the count of tar entries. Past either the
 * import is INVALID_ARGUMENT and leaves nothing: no image, no blob, no
 * temporary file (the spooled upload and the unpacked archive removed).
 * The limits are lowered for the test (ImportOptions.limits); the router's
 * are IMAGE_INPUT's.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { gzipSync } from "node:zlib";
import { TaskRouterError } from "../src/errors.ts";
import { ImageStore } from "../src/images/image-store.ts";
import { type ImportOptions, importChunks } from "../src/images/oci-import.ts";
import { IMAGE_INPUT } from "../src/limits.ts";
import { tarOf } from "./helpers/tar.ts";

const MiB = 1024 * 1024;

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function* chunksOf(b: Buffer): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < b.length; i += 64 * 1024) yield b.subarray(i, i + 64 * 1024);
}

/** An OCI image layout archive (uncompressed) of one layer, listed `times` times. */
async function ociArchive(layer: Buffer, times = 1): Promise<Buffer> {
  const desc = {
    mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
    digest: `sha256:${sha(layer)}`,
    size: layer.length,
  };
  const manifest = Buffer.from(
    JSON.stringify({ schemaVersion: 2, layers: Array.from({ length: times }, () => desc) }),
  );
  const index = JSON.stringify({
    schemaVersion: 2,
    manifests: [
      {
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        digest: `sha256:${sha(manifest)}`,
      },
    ],
  });
  return tarOf([
    { name: "oci-layout", body: '{"imageLayoutVersion":"1.0.0"}' },
    { name: "index.json", body: index },
    { name: `blobs/sha256/${sha(manifest)}`, body: manifest },
    { name: `blobs/sha256/${sha(layer)}`, body: layer },
  ]);
}

describe("ImportImage limits: inflated bytes and entries", () => {
  let dir: string;
  let store: ImageStore;
  /** A tar holding 8 MiB of zeros, gzipped: about 8 KiB. */
  let bomb: Buffer;
  const limits = { inflatedBytes: 4 * MiB, entries: 100 };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskrouter-import-limits-"));
    store = new ImageStore(join(dir, "images"));
    await store.init();
    bomb = gzipSync(await tarOf([{ name: "zeros", body: Buffer.alloc(8 * MiB) }]));
    assert.ok(bomb.length < 64 * 1024);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  function opts(format: ImportOptions["format"], l = limits): ImportOptions {
    return { format, ttl: { kind: "default" }, source: "test", limits: l };
  }

  async function refused(p: Promise<string>, re: RegExp): Promise<void> {
    await assert.rejects(p, (err: Error) => {
      assert.ok(err instanceof TaskRouterError, `a domain error, got ${err.stack}`);
      assert.equal(err.kind, "InvalidArgument");
      assert.match(err.message, re);
      return true;
    });
    // Nothing left: no image, no blob, no temporary file.
    assert.deepEqual(await store.list(), []);
    assert.deepEqual(await store.blobs.list(), []);
    assert.deepEqual(await readdir(store.tmpDir), []);
  }

  it("the limits of the router", () => {
    assert.equal(IMAGE_INPUT.importInflatedBytes, 64 * 1024 * MiB);
    assert.equal(IMAGE_INPUT.importEntries, 2_000_000);
  });

  it("a gzipped tree inflating past the limit is refused", async () => {
    await refused(
      importChunks(store, chunksOf(bomb), opts("tree")),
      /more than 4194304 bytes to read/,
    );
  });

  it("an archive whose gzipped layer inflates past the limit is refused", async () => {
    const archive = await ociArchive(bomb);
    await refused(
      importChunks(store, chunksOf(archive), opts("archive")),
      /more than 4194304 bytes to read/,
    );
  });

  it("a gzipped archive inflating past the limit is refused while it is unpacked", async () => {
    const outer = gzipSync(await tarOf([{ name: "pad", body: Buffer.alloc(8 * MiB) }]));
    await refused(
      importChunks(store, chunksOf(outer), opts("archive")),
      /more than 4194304 bytes to read/,
    );
  });

  it("one plain layer listed many times counts each time it is read", async () => {
    // 1 MiB uncompressed, listed 8 times: within the limit once, 8 reads (and 8 digest checks) past it.
    const layer = await tarOf([{ name: "same", body: Buffer.alloc(MiB, 1) }]);
    await refused(
      importChunks(store, chunksOf(await ociArchive(layer, 8)), opts("archive")),
      /more than 4194304 bytes to read/,
    );
  });

  it("a tree of more entries than the limit is refused", async () => {
    const items = Array.from({ length: 150 }, (_, i) => ({
      name: `d${i}/`,
      type: "directory" as const,
    }));
    await refused(
      importChunks(store, chunksOf(await tarOf(items)), opts("tree")),
      /more than 100 entries/,
    );
  });

  it("the same archives within the limits import", async () => {
    const roomy = { inflatedBytes: 16 * MiB, entries: 1000 };
    const a = await importChunks(store, chunksOf(bomb), opts("tree", roomy));
    const b = await importChunks(store, chunksOf(await ociArchive(bomb)), opts("archive", roomy));
    assert.equal(a, b);
    const { entries } = await store.manifest(a);
    assert.deepEqual(
      entries.map((e) => [e.path, e.size]),
      [
        ["", 0],
        ["zeros", 8 * MiB],
      ],
    );
    assert.deepEqual(await readdir(store.tmpDir), []);
  });
});
