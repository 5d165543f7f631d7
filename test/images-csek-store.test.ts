/**
 * Sealed images at the domain level: copy mode (a router that is not root),
 * chunk boundaries, tampering (a changed or swapped blob, a changed
 * manifest: the mount fails and leaves nothing), the key object never
 * printing its bytes, and a restart removing a sealed mount's tmpfs layer.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { inspect } from "node:util";
import { NotFoundError } from "../src/errors.ts";
import { Csek } from "../src/images/csek.ts";
import { ImageService, type TaskFs } from "../src/images/service.ts";
import { mountsUnder } from "../src/runtime/runc/mounts.ts";
import { makeTree, overlaySkipReason, rejectsKind, scratch } from "./helpers/images.ts";
import { readTree } from "./helpers/tree.ts";

const b = (s: string) => Buffer.from(s);
const KEY = randomBytes(32);

const hostFs: TaskFs = { runtime: "host", root: "/", refuseSymlinks: true };
function svcLookup(t: string): TaskFs {
  if (t !== "t") throw new NotFoundError("no task");
  return hostFs;
}

function service(dataDir: string, mountMode: "copy" | "overlay"): ImageService {
  return new ImageService(dataDir, svcLookup, { mountMode });
}

describe("sealed images: copy mode, chunking, tampering", () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let svc: ImageService;
  let data: string;

  before(async () => {
    s = await scratch();
    data = join(s.dir, "data");
    svc = service(data, "copy");
    await svc.init(() => false);
  });
  after(async () => {
    await svc.teardownTask("t");
    await s.cleanup();
  });

  const sealedDir = (id: string) => join(data, "images", "sealed", id);

  it("round trip in copy mode, with files at and around the 1 MiB chunk size", async () => {
    const src = join(s.dir, "src");
    await makeTree(src);
    const MiB = 1024 * 1024;
    for (const n of [MiB - 1, MiB, MiB + 1, 2 * MiB, 3 * MiB + 17]) {
      await writeFile(join(src, `size-${n}`), randomBytes(n));
    }
    const id = await svc.snapshotDirectory("t", b(src), { encryptionKey: KEY });
    const dst = join(s.dir, "dst");
    await svc.mountDirectory("t", b(dst), id, { encryptionKey: KEY });
    assert.deepEqual(
      await readTree(dst, { withTimes: true }),
      await readTree(src, { withTimes: true }),
    );
    await svc.unmountDirectory("t", b(dst));
    await rejectsKind(
      () => svc.mountDirectory("t", b(dst), id, { encryptionKey: randomBytes(32) }),
      "PermissionDenied",
    );
    await rejectsKind(() => svc.mountDirectory("t", b(dst), id), "FailedPrecondition");
    // Paths without a key refuse it: a task root, export, inspection of the tree.
    await rejectsKind(() => svc.acquireUnpacked(id), "FailedPrecondition", /encrypted/);
    await rejectsKind(() => svc.exportImage(id), "FailedPrecondition", /encrypted/);
    assert.deepEqual((await svc.inspect(id)).manifest.entries, []);
    assert.deepEqual(
      (await readdir(s.dir)).filter((n) => n === "dst"),
      [],
    );
  });

  it("a changed blob, a swapped blob or a changed manifest fails the mount and leaves nothing", async () => {
    const src = join(s.dir, "tamper-src");
    await mkdir(src);
    await writeFile(join(src, "a"), "first file\n");
    await writeFile(join(src, "b"), "second file\n");
    const dst = join(s.dir, "tamper-dst");
    const attempt = async (damage: (dir: string) => Promise<void>) => {
      const id = await svc.snapshotDirectory("t", b(src), { encryptionKey: KEY });
      await damage(sealedDir(id));
      await assert.rejects(
        svc.mountDirectory("t", b(dst), id, { encryptionKey: KEY }),
        /failed authentication|corrupt/,
      );
      assert.deepEqual(
        (await readdir(s.dir)).filter((n) => n.startsWith("tamper-dst")),
        [],
      );
      assert.equal(svc.mounts.list("t").length, 0);
      await svc.delete(id);
    };
    const blobs = async (dir: string) =>
      (await readdir(join(dir, "blobs"))).map((n) => join(dir, "blobs", n));
    await attempt(async (dir) => {
      const [f] = await blobs(dir);
      assert.ok(f);
      await chmod(f, 0o600);
      const bytes = await readFile(f);
      bytes[bytes.length - 20] = (bytes[bytes.length - 20] ?? 0) ^ 1;
      await writeFile(f, bytes);
    });
    await attempt(async (dir) => {
      const [x, y] = await blobs(dir);
      assert.ok(x && y);
      await rename(x, `${x}.tmp`);
      await rename(y, x);
      await rename(`${x}.tmp`, y);
    });
    await attempt(async (dir) => {
      const f = join(dir, "manifest");
      const env = JSON.parse(await readFile(f, "utf8")) as { tree: string };
      const tree = Buffer.from(env.tree, "base64");
      tree[20] = (tree[20] ?? 0) ^ 1;
      env.tree = tree.toString("base64");
      await chmod(f, 0o600);
      await writeFile(f, JSON.stringify(env));
    });
  });

  it("gc removes an expired sealed image with its blobs, without a key", async () => {
    let now = Date.now();
    const clocked = new ImageService(join(s.dir, "gc-data"), svcLookup, {
      mountMode: "copy",
      now: () => now,
    });
    await clocked.init(() => false);
    const src = join(s.dir, "gc-src");
    await makeTree(src);
    const id = await clocked.snapshotDirectory("t", b(src), {
      encryptionKey: KEY,
      ttlSeconds: 60n,
    });
    const keep = await clocked.snapshotDirectory("t", b(src), { encryptionKey: randomBytes(16) });
    now += 61_000;
    const r = await clocked.gc();
    assert.deepEqual(r.imagesRemoved, [id]);
    const left = await readdir(join(s.dir, "gc-data", "images", "sealed"));
    assert.deepEqual(left, [keep]);
    await rejectsKind(
      () => clocked.mountDirectory("t", b(join(s.dir, "gc-dst")), id, { encryptionKey: KEY }),
      "NotFound",
    );
  });

  it("TaskSnapshotFilesystem with a key makes a sealed image of the task's root", async () => {
    const root = join(s.dir, "fake-root");
    await makeTree(root);
    const fake: TaskFs = { runtime: "fake", root, refuseSymlinks: false };
    const fsSvc = new ImageService(join(s.dir, "fs-data"), () => fake, { mountMode: "copy" });
    await fsSvc.init(() => false);
    const id = await fsSvc.snapshotFilesystem("t", { encryptionKey: KEY, ttlSeconds: -1n });
    assert.equal((await fsSvc.inspect(id)).meta.encrypted, true);
    const out = join(s.dir, "fs-out");
    const hostSvc = new ImageService(join(s.dir, "fs-data"), svcLookup, { mountMode: "copy" });
    await hostSvc.init(() => false);
    await hostSvc.mountDirectory("t", b(out), id, { encryptionKey: KEY });
    assert.deepEqual(
      await readTree(out, { withTimes: true }),
      await readTree(root, { withTimes: true }),
    );
    await hostSvc.teardownTask("t");
  });

  it("the key object never shows its bytes", () => {
    const csek = Csek.from(KEY);
    assert.ok(csek);
    for (const shown of [inspect(csek), JSON.stringify({ csek }), String(csek)]) {
      assert.ok(!shown.includes(KEY.toString("hex").slice(0, 8)));
      assert.ok(!shown.includes(KEY.toString("base64").slice(0, 8)));
    }
    assert.equal(Csek.from(undefined), undefined);
    assert.throws(() => Csek.from(Buffer.alloc(15)), /16 to 512/);
    assert.throws(() => Csek.from(Buffer.alloc(513)), /16 to 512/);
  });
});

describe("sealed images: overlay mounts over a tmpfs layer", { skip: overlaySkipReason() }, () => {
  it("the layer is a tmpfs; unmount and a restart that drops the mount remove it", async () => {
    const s = await scratch();
    try {
      const data = join(s.dir, "data");
      const src = join(s.dir, "src");
      await makeTree(src);
      const svc = service(data, "overlay");
      await svc.init(() => false);
      const id = await svc.snapshotDirectory("t", b(src), { encryptionKey: KEY });
      const dst = join(s.dir, "dst");
      await svc.mountDirectory("t", b(dst), id, { encryptionKey: KEY });
      const [rec] = svc.mounts.list("t");
      assert.ok(rec?.sealed);
      const layer = join(data, "images", "mounts", rec.id);
      assert.ok((await mountsUnder(layer)).includes(layer), "the layer is a mount (tmpfs)");
      await svc.unmountDirectory("t", b(dst));
      assert.deepEqual(await mountsUnder(data), []);
      await assert.rejects(readdir(layer), { code: "ENOENT" });
      // Mounted again, then a new router that does not keep the mount cleans it all up.
      await svc.mountDirectory("t", b(dst), id, { encryptionKey: KEY });
      const again = service(data, "overlay");
      await again.init(() => false);
      assert.deepEqual(await mountsUnder(data), []);
      assert.deepEqual(await readdir(join(data, "images", "mounts")), []);
    } finally {
      await rm(join(s.dir, "dst"), { recursive: true, force: true }).catch(() => undefined);
      await s.cleanup();
    }
  });
});
