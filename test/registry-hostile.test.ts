/**
 * A pull reads a hostile registry's answers (whoever may push to it chooses
 * them) only as far as they may go: a manifest stops at 4 MiB, a config at
 * the size its manifest gives (and a config over 256 MiB is never fetched), a
 * layer at the first byte past its declared size or the first file past
 * those its group lists; each is a bad image
 * (INVALID_ARGUMENT) and nothing is stored. A full disk while storing a
 * layer fails the pull at once (RESOURCE_EXHAUSTED), never retried as if the
 * network had failed. Real components: Debian's registry, the router's
 * store, pusher and puller; the manifest over 4 MiB comes from a small HTTP
 * server of the test, since the real registry refuses to store one.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pack } from "tar-stream";
import { TaskRouterError } from "../src/errors.ts";
import { ImageStore } from "../src/images/image-store.ts";
import { importChunks } from "../src/images/oci-import.ts";
import { RegistryClient, type RetryPolicy } from "../src/images/registry/client.ts";
import { Puller } from "../src/images/registry/pull.ts";
import { Pusher } from "../src/images/registry/push.ts";
import { PushedMarks } from "../src/images/registry/transfer.ts";
import { IMAGE_INPUT } from "../src/limits.ts";
import { NO_METRICS } from "../src/metrics/metrics.ts";
import { registrySkipReason, startRegistry, type TestRegistry } from "./helpers/registry.ts";

const skip = registrySkipReason();
const REPO = "hostile/images";
const RETRY: RetryPolicy = { attempts: 3, firstDelayMs: 1, maxDelayMs: 1 };
const MiB = 1024 * 1024;
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}
interface OciManifest {
  config: Descriptor;
  layers: Descriptor[];
}

/** A tar of one directory holding `files` (name → bytes). */
async function tarOf(files: Record<string, Buffer>): Promise<Buffer> {
  const p = pack();
  const parts: Buffer[] = [];
  p.on("data", (c: unknown) => parts.push(c as Buffer));
  const end = new Promise<void>((resolve) => p.on("end", () => resolve()));
  for (const [name, body] of Object.entries(files)) p.entry({ name, mode: 0o644 }, body);
  p.finalize();
  await end;
  return Buffer.concat(parts);
}

async function* once(b: Buffer): AsyncGenerator<Uint8Array> {
  yield b;
}

/** Asserts `p` rejects with a domain error of `kind` whose message matches `re`. */
async function rejects(p: Promise<unknown>, kind: string, re: RegExp): Promise<void> {
  await assert.rejects(p, (err: Error) => {
    assert.ok(err instanceof TaskRouterError, `a domain error, got ${err.stack}`);
    assert.equal(err.kind, kind, err.message);
    assert.match(err.message, re);
    return true;
  });
}

describe("a pull from a hostile registry reads only what it may", { skip }, () => {
  let reg: TestRegistry;
  let dir: string;
  let source: ImageStore;
  let client: RegistryClient;
  const retries: string[] = [];
  const closing = new AbortController();

  before(async () => {
    reg = await startRegistry();
    dir = await mkdtemp(join(tmpdir(), "taskrouter-hostile-"));
    source = new ImageStore(join(dir, "source"));
    await source.init();
    client = new RegistryClient(
      { host: reg.host, repo: REPO },
      { insecure: true, retry: RETRY, onRetry: (what, err) => retries.push(`${what}: ${err}`) },
    );
  });
  after(async () => {
    closing.abort();
    await reg?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** An image of `files` made in the source store and pushed: its id and OCI manifest. */
  async function pushed(files: Record<string, Buffer>) {
    const id = await importChunks(source, once(await tarOf(files)), {
      format: "tree",
      ttl: { kind: "default" },
      source: "test",
    });
    const marks = new PushedMarks(source, client.name);
    await marks.init();
    await new Pusher(source, client, marks, closing.signal).push(id);
    const res = await fetch(`http://${reg.host}/v2/${REPO}/manifests/${id}`, {
      headers: { accept: OCI_MANIFEST },
    });
    assert.equal(res.status, 200);
    return { id, manifest: (await res.json()) as OciManifest };
  }

  /** Replaces the manifest the registry holds for `id`. */
  async function replace(id: string, manifest: OciManifest): Promise<void> {
    const res = await fetch(`http://${reg.host}/v2/${REPO}/manifests/${id}`, {
      method: "PUT",
      headers: { "content-type": OCI_MANIFEST },
      body: JSON.stringify(manifest),
    });
    assert.equal(res.status, 201, await res.text());
  }

  /** Replaces the registry's manifest of `id` with `manifest`, its first layer changed by `change`. */
  async function replaceLayer(id: string, manifest: OciManifest, change: Partial<Descriptor>) {
    const layer = { ...(manifest.layers[0] as Descriptor), ...change };
    await replace(id, { ...manifest, layers: [layer, ...manifest.layers.slice(1)] });
  }

  /** A fresh store with a puller of `through` (the registry's client by default). */
  async function target(name: string, through = client, root = join(dir, name)) {
    const store = new ImageStore(root);
    await store.init();
    const marks = new PushedMarks(store, through.name);
    await marks.init();
    let received = 0;
    const metrics = { ...NO_METRICS, registryBytes: (_d: string, n: number) => (received += n) };
    const puller = new Puller(store, through, marks, closing.signal, metrics);
    return { store, puller, received: () => received };
  }

  /** Nothing of image `id` is in `store`: no image, no blob, no temporary file. */
  async function nothingStored(store: ImageStore, id: string): Promise<void> {
    assert.equal(await store.readMeta(id), undefined);
    assert.deepEqual(await store.blobs.list(), []);
    assert.deepEqual(await readdir(store.tmpDir), []);
  }

  it("a layer longer than its manifest says stops at that size: a bad image, nothing stored", async () => {
    const { id, manifest } = await pushed({ big: randomBytes(24 * MiB), small: Buffer.from("s") });
    const layer = manifest.layers[0] as Descriptor;
    assert.ok(layer.size > 24 * MiB);
    await replaceLayer(id, manifest, { size: MiB });
    const t = await target("layer");
    await rejects(t.puller.pull(id), "InvalidArgument", /larger than the 1048576 bytes/);
    // The config, then the layer up to its declared size: not the 24 MiB the registry sent.
    const read = t.received() - manifest.config.size;
    assert.ok(read <= MiB, `${read} bytes of the layer received`);
    assert.deepEqual(retries, []);
    await nothingStored(t.store, id);
  });

  /** Uploads `bytes` as a blob of the test's repository; its digest. */
  async function upload(bytes: Buffer): Promise<string> {
    const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
    const start = await fetch(`http://${reg.host}/v2/${REPO}/blobs/uploads/`, { method: "POST" });
    const url = new URL(start.headers.get("location") ?? "", `http://${reg.host}`);
    url.searchParams.set("digest", digest);
    const put = await fetch(url, { method: "PUT", body: new Uint8Array(bytes) });
    assert.equal(put.status, 201);
    return digest;
  }

  it("a layer holding more files than its group lists: a bad image, nothing stored", async () => {
    const body = Buffer.from("listed");
    const { id, manifest } = await pushed({ a: body });
    const tar = await tarOf({ a: body, extra: randomBytes(4096) });
    const digest = await upload(tar);
    await replaceLayer(id, manifest, { digest, size: tar.length });
    const t = await target("entries");
    await rejects(t.puller.pull(id), "InvalidArgument", /holds more than 1 files/);
    assert.deepEqual(retries, []);
    await nothingStored(t.store, id);
  });

  it("a layer said to be larger than its files can make is refused before it is fetched", async () => {
    const { id, manifest } = await pushed({ a: Buffer.from("five!") });
    const layer = manifest.layers[0] as Descriptor;
    const gets = await reg.blobGets(layer.digest);
    await replaceLayer(id, manifest, { size: 2 * 1024 * MiB });
    const t = await target("bound");
    await rejects(t.puller.pull(id), "InvalidArgument", /over the \d+ its files need/);
    assert.equal(await reg.blobGets(layer.digest), gets, "the layer was not fetched");
    assert.deepEqual(retries, []);
    await nothingStored(t.store, id);
  });

  it("a layer that runs past its declared size inside a file: a bad image, not retried", async () => {
    const { id, manifest } = await pushed({ big: randomBytes(10 * MiB) });
    await replaceLayer(id, manifest, { size: 5 * MiB });
    const t = await target("midfile");
    await rejects(t.puller.pull(id), "InvalidArgument", /larger than the 5242880 bytes/);
    assert.deepEqual(retries, []);
    await nothingStored(t.store, id);
  });

  it("a config of many small JSON values is refused before it is parsed", async () => {
    const { id, manifest } = await pushed({ a: Buffer.from("values") });
    const config = Buffer.from(`{"x":[${Array.from({ length: 200_000 }, () => "{}").join(",")}]}`);
    const digest = await upload(config);
    await replace(id, { ...manifest, config: { ...manifest.config, digest, size: config.length } });
    const t = await target("values");
    await rejects(t.puller.pull(id), "InvalidArgument", /config holds over \d+ JSON values/);
    assert.deepEqual(retries, []);
    await nothingStored(t.store, id);
  });

  it("a config longer than its manifest says is never read past it; one over 256 MiB is not fetched", async () => {
    const { id, manifest } = await pushed({ a: Buffer.from("config test") });
    const t = await target("config");
    await replace(id, { ...manifest, config: { ...manifest.config, size: 100 } });
    await rejects(t.puller.pull(id), "InvalidArgument", /config is larger than the 100 bytes/);
    assert.equal(t.received(), 0);
    const gets = await reg.blobGets(manifest.config.digest);
    const huge = IMAGE_INPUT.configBytes + 1;
    await replace(id, { ...manifest, config: { ...manifest.config, size: huge } });
    await rejects(
      t.puller.pull(id),
      "InvalidArgument",
      new RegExp(`config is ${huge} bytes, over`),
    );
    assert.equal(await reg.blobGets(manifest.config.digest), gets, "the config was not fetched");
    assert.deepEqual(retries, []);
    await nothingStored(t.store, id);
  });

  describe("a manifest over 4 MiB (from a registry that serves one)", () => {
    let server: Server;
    let sent = 0;
    let through: RegistryClient;

    before(async () => {
      // Manifests of any length: `/chunked/` streams up to 256 MiB without a
      // length, `/declared/` announces 5 MiB.
      server = createServer(async (req, res) => {
        if (req.url?.includes("/declared/")) {
          res.writeHead(200, { "content-type": OCI_MANIFEST, "content-length": 5 * MiB });
          res.end(Buffer.alloc(5 * MiB, 0x20));
          return;
        }
        res.writeHead(200, { "content-type": OCI_MANIFEST });
        const chunk = Buffer.alloc(256 * 1024, 0x20);
        res.on("close", () => undefined);
        for (let i = 0; i < 1024 && !res.destroyed; i++) {
          sent += chunk.length;
          if (!res.write(chunk)) {
            await new Promise<void>((resolve) => {
              res.once("drain", resolve);
              res.once("close", resolve);
            });
          }
        }
        res.end();
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      const port = (server.address() as { port: number }).port;
      through = new RegistryClient(
        { host: `127.0.0.1:${port}`, repo: "chunked/images" },
        { insecure: true, retry: RETRY },
      );
    });
    after(async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });

    it("streamed without a length: refused at 4 MiB, never read to its end", async () => {
      const t = await target("manifest", through);
      const id = `im-${"ab".repeat(16)}`;
      await rejects(t.puller.pull(id), "InvalidArgument", /manifest is over 4194304 bytes/);
      assert.ok(sent < 64 * MiB, `the server sent ${sent} bytes of 256 MiB`);
      await nothingStored(t.store, id);
    });

    it("announced longer than 4 MiB: refused before reading", async () => {
      const declared = new RegistryClient(
        { host: through.ref.host, repo: "declared/images" },
        { insecure: true, retry: RETRY },
      );
      const t = await target("declared", declared);
      const id = `im-${"cd".repeat(16)}`;
      await rejects(t.puller.pull(id), "InvalidArgument", /manifest is over 4194304 bytes/);
      await nothingStored(t.store, id);
    });
  });

  it("a full disk while storing a layer fails the pull at once: no retry, nothing stored", {
    skip: process.getuid?.() === 0 ? false : "not root (a small tmpfs needs mount)",
  }, async () => {
    const { id, manifest } = await pushed({ fill: randomBytes(12 * MiB) });
    const layer = manifest.layers[0] as Descriptor;
    const root = join(dir, "full");
    await mkdir(root);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=6m", "tmpfs", root]);
    try {
      const t = await target("full", client, join(root, "images"));
      retries.length = 0;
      await rejects(t.puller.pull(id), "ResourceExhausted", /no space to store it \(ENOSPC\)/);
      assert.deepEqual(retries, []);
      assert.equal(await reg.blobGets(layer.digest), 1, "the layer was fetched once");
      await nothingStored(t.store, id);
    } finally {
      execFileSync("umount", [root]);
    }
  });
});
