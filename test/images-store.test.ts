import assert from "node:assert/strict";
import { constants } from "node:fs";
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { NotFoundError } from "../src/errors.ts";
import { openFd } from "../src/images/fdio.ts";
import { ImageService, type TaskFs } from "../src/images/service.ts";
import { DEFAULT_TTL_MS } from "../src/images/ttl.ts";
import { blobFiles, makeTree, overlaySkipReason, rejectsKind, scratch } from "./helpers/images.ts";
import { readTree } from "./helpers/tree.ts";

const skip = overlaySkipReason();
const b = (s: string) => Buffer.from(s);

/** An image service on a scratch data dir, host-style task "t", a movable clock and a read log. */
async function service(dir: string) {
  const reads: string[] = [];
  let fail: RegExp | undefined;
  const clock = { now: 1_800_000_000_000 };
  const fs: TaskFs = { runtime: "host", root: "/", refuseSymlinks: true };
  const tasks = new Set(["t", "u"]);
  const svc = new ImageService(
    join(dir, "data"),
    (taskId) => {
      if (!tasks.has(taskId)) throw new NotFoundError(`task ${taskId} not found`);
      return fs;
    },
    {
      now: () => clock.now,
      openFile: async (p) => {
        const path = p.toString();
        if (fail?.test(path)) throw Object.assign(new Error("EACCES"), { code: "EACCES" });
        reads.push(path);
        return openFd(p, constants.O_RDONLY | constants.O_NOFOLLOW);
      },
    },
  );
  await svc.init(() => false);
  return {
    svc,
    reads,
    clock,
    failOn: (re: RegExp | undefined) => {
      fail = re;
    },
  };
}

describe("image store: incremental snapshots, ttl, idempotency, gc (domain)", { skip }, () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let t: Awaited<ReturnType<typeof service>>;

  before(async () => {
    s = await scratch();
    t = await service(s.dir);
  });
  after(async () => {
    await t.svc.teardownTask("t");
    await t.svc.teardownTask("u");
    await s.cleanup();
  });

  it("re-snapshotting a mounted tree reads only the files changed since the mount", async () => {
    const src = join(s.dir, "inc-src");
    await mkdir(src);
    for (let i = 0; i < 200; i++) {
      await mkdir(join(src, `d${i % 10}`), { recursive: true });
      await writeFile(join(src, `d${i % 10}`, `f${i}`), `content ${i}\n`);
    }
    const base = await t.svc.snapshotDirectory("t", b(src), {});
    assert.equal(t.reads.length, 200);
    const dst = join(s.dir, "inc-dst");
    await t.svc.mountDirectory("t", b(dst), base);
    try {
      t.reads.length = 0;
      assert.equal(await t.svc.snapshotDirectory("t", b(dst), {}), base, "unchanged: same image");
      assert.equal(t.reads.length, 0, t.reads.join(", "));
      await writeFile(join(dst, "d3", "f3"), "changed\n");
      await writeFile(join(dst, "d4", "brand-new"), "new\n");
      await rm(join(dst, "d5"), { recursive: true });
      const next = await t.svc.snapshotDirectory("t", b(dst), {});
      assert.deepEqual(t.reads.map((p) => p.split("/").slice(-2).join("/")).sort(), [
        "d3/f3",
        "d4/brand-new",
      ]);
      const other = join(s.dir, "inc-check");
      await t.svc.mountDirectory("t", b(other), next);
      assert.deepEqual(await readTree(other), await readTree(dst));
      await t.svc.unmountDirectory("t", b(other));
    } finally {
      await t.svc.unmountDirectory("t", b(dst));
    }
  });

  it("an unreadable entry fails the snapshot with its path and leaves nothing behind", async () => {
    const src = join(s.dir, "unreadable");
    await makeTree(src);
    const images = (await t.svc.list()).length;
    const blobs = await blobFiles(join(s.dir, "data"));
    t.failOn(/\/sub\/big\.bin$/);
    try {
      await rejectsKind(
        () => t.svc.snapshotDirectory("t", b(src), {}),
        "FailedPrecondition",
        /cannot read "sub\/big.bin": permission denied/,
      );
    } finally {
      t.failOn(undefined);
    }
    assert.equal((await t.svc.list()).length, images);
    assert.deepEqual(await blobFiles(join(s.dir, "data")), blobs);
    assert.deepEqual(await readdir(join(s.dir, "data", "images", "tmp")), []);
  });

  it("device files are refused; sockets and FIFOs are left out", async () => {
    const src = join(s.dir, "special");
    await mkdir(src);
    await writeFile(join(src, "f"), "x");
    const { execFileSync } = await import("node:child_process");
    execFileSync("mkfifo", [join(src, "fifo")]);
    const id = await t.svc.snapshotDirectory("t", b(src), {});
    const { manifest } = await t.svc.inspect(id);
    assert.deepEqual(
      manifest.entries.map((e) => e.path),
      ["", "f"],
    );
    execFileSync("mknod", [join(src, "null"), "c", "1", "3"]);
    await rejectsKind(
      () => t.svc.snapshotDirectory("t", b(src), {}),
      "FailedPrecondition",
      /"null" is a device file/,
    );
  });

  it("ttl_seconds: 0 and negatives but -1 are INVALID_ARGUMENT; -1 never expires; unset is 30 days renewed on use", async () => {
    const src = join(s.dir, "ttl");
    await makeTree(src);
    for (const ttl of [0n, -2n, -100n]) {
      await rejectsKind(
        () => t.svc.snapshotDirectory("t", b(src), { ttlSeconds: ttl }),
        "InvalidArgument",
        /ttl_seconds/,
      );
    }
    const id = await t.svc.snapshotDirectory("t", b(src), {});
    let meta = (await t.svc.inspect(id)).meta;
    assert.equal(meta.expiresAtMs, t.clock.now + DEFAULT_TTL_MS);
    assert.equal(meta.renew, true);
    t.clock.now += 10 * 24 * 3600 * 1000; // a use ten days later pushes the expiry
    const dst = join(s.dir, "ttl-use");
    await t.svc.mountDirectory("t", b(dst), id);
    await t.svc.unmountDirectory("t", b(dst));
    meta = (await t.svc.inspect(id)).meta;
    assert.equal(meta.expiresAtMs, t.clock.now + DEFAULT_TTL_MS);

    await writeFile(join(src, "forever"), "x");
    const never = await t.svc.snapshotDirectory("t", b(src), { ttlSeconds: -1n });
    assert.equal((await t.svc.inspect(never)).meta.expiresAtMs, null);

    await writeFile(join(src, "short"), "x");
    const short = await t.svc.snapshotDirectory("t", b(src), { ttlSeconds: 60n });
    assert.equal((await t.svc.inspect(short)).meta.expiresAtMs, t.clock.now + 60_000);
    assert.equal((await t.svc.inspect(short)).meta.renew, false);

    t.clock.now += 61_000; // the short one expired: not mountable, collected by gc
    await rejectsKind(() => t.svc.mountDirectory("t", b(dst), short), "NotFound", /expired/);
    const gc = await t.svc.gc();
    assert.deepEqual(gc.imagesRemoved, [short]);
    await rejectsKind(() => t.svc.inspect(short), "NotFound");
    await t.svc.inspect(never);
    await t.svc.inspect(id);
    t.clock.now += 400 * 24 * 3600 * 1000;
    const gc2 = await t.svc.gc();
    assert.ok(gc2.imagesRemoved.includes(id));
    assert.ok(!gc2.imagesRemoved.includes(never));
  });

  it("snapshot_id: the same id returns the same image; another path with it is ALREADY_EXISTS", async () => {
    const src = join(s.dir, "idem");
    await makeTree(src);
    const a = await t.svc.snapshotDirectory("t", b(src), { snapshotId: "snap-1" });
    await writeFile(join(src, "changed-after"), "x");
    const again = await t.svc.snapshotDirectory("t", b(src), { snapshotId: "snap-1" });
    assert.equal(again, a);
    // Concurrent requests with one id share one capture.
    const both = await Promise.all([
      t.svc.snapshotDirectory("t", b(src), { snapshotId: "snap-2" }),
      t.svc.snapshotDirectory("t", b(src), { snapshotId: "snap-2" }),
    ]);
    assert.equal(both[0], both[1]);
    assert.notEqual(both[0], a);
    await rejectsKind(
      () => t.svc.snapshotDirectory("t", b(join(s.dir, "ttl")), { snapshotId: "snap-1" }),
      "AlreadyExists",
    );
    // The key is scoped to its task.
    const other = await t.svc.snapshotDirectory("u", b(src), { snapshotId: "snap-1" });
    assert.equal(other, both[0]);
  });

  it("gc removes blobs no image uses, keeps mounted images, and rm refuses a mounted image", async () => {
    const src = join(s.dir, "gc");
    await makeTree(src);
    await writeFile(join(src, "only-here"), "unique content for gc test");
    const id = await t.svc.snapshotDirectory("t", b(src), { ttlSeconds: 1n });
    const dst = join(s.dir, "gc-dst");
    await t.svc.mountDirectory("t", b(dst), id);
    t.clock.now += 5_000; // expired, but mounted
    assert.ok(!(await t.svc.gc()).imagesRemoved.includes(id));
    await rejectsKind(() => t.svc.delete(id), "FailedPrecondition", /in use/);
    await t.svc.unmountDirectory("t", b(dst));
    const before = (await blobFiles(join(s.dir, "data"))).length;
    const gc = await t.svc.gc();
    assert.ok(gc.imagesRemoved.includes(id));
    assert.ok(gc.blobsRemoved >= 1);
    assert.equal((await blobFiles(join(s.dir, "data"))).length, before - gc.blobsRemoved);
    // Every remaining image still has all its blobs.
    const have = new Set(await blobFiles(join(s.dir, "data")));
    for (const img of await t.svc.list()) {
      for (const e of (await t.svc.inspect(img.id)).manifest.entries) {
        if (e.digest) assert.ok(have.has(e.digest.slice(7)), `${img.id} lost ${e.digest}`);
      }
    }
    await rejectsKind(() => t.svc.delete(id), "NotFound");
  });
});
