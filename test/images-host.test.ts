import assert from "node:assert/strict";
import { chmod, mkdir, readFile, rm, stat, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { TaskImagesClient } from "../src/client/images.ts";
import { mountsUnder } from "../src/runtime/runc/mounts.ts";
import {
  blobFiles,
  makeTree,
  overlaySkipReason,
  rejectsKind,
  taskScratch,
} from "./helpers/images.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { readTree } from "./helpers/tree.ts";

const skip = overlaySkipReason();

describe("images on the host runtime: snapshot, mount, unmount", { skip }, () => {
  let r: TestRouter;
  let images: TaskImagesClient;
  let task: string;
  let s: Awaited<ReturnType<typeof taskScratch>>;

  before(async () => {
    r = await startRouter();
    images = new TaskImagesClient(r.client);
    task = await r.newTask();
    // A host task's image calls are confined to its own directory.
    s = await taskScratch(r.dataDir, task);
  });
  after(async () => {
    await s?.cleanup();
    await r?.close();
  });

  it("round trip: snapshot, mount elsewhere, identical tree (content, modes, symlinks, empty dirs)", async () => {
    const src = join(s.dir, "rt-src");
    await makeTree(src);
    const id = await images.snapshotDirectory(task, src);
    assert.match(id, /^im-[0-9a-f]{32}$/);
    const dst = join(s.dir, "rt-dst", "nested");
    await images.mount(task, dst, id);
    try {
      assert.deepEqual(
        await readTree(dst, { withTimes: true }),
        await readTree(src, { withTimes: true }),
      );
    } finally {
      await images.unmount(task, dst);
    }
  });

  it("the same tree twice gives the same id and stores no new blob", async () => {
    const src = join(s.dir, "same");
    await makeTree(src);
    const a = await images.snapshotDirectory(task, src);
    const blobs = await blobFiles(r.dataDir);
    const b = await images.snapshotDirectory(task, src);
    assert.equal(a, b);
    assert.deepEqual(await blobFiles(r.dataDir), blobs);
    // A mounted copy that nobody changed snapshots to the same image too.
    const dst = join(s.dir, "same-mounted");
    await images.mount(task, dst, a);
    try {
      assert.equal(await images.snapshotDirectory(task, dst), a);
    } finally {
      await images.unmount(task, dst);
    }
  });

  it("captures local changes and deletions of a mounted image (whiteouts become absences)", async () => {
    const src = join(s.dir, "chg-src");
    await makeTree(src);
    const base = await images.snapshotDirectory(task, src);
    const dst = join(s.dir, "chg-dst");
    await images.mount(task, dst, base);
    const dst2 = join(s.dir, "chg-dst2");
    try {
      await writeFile(join(dst, "hello.txt"), "changed\n");
      await unlink(join(dst, "secret"));
      await rm(join(dst, "sub", "deep"), { recursive: true });
      await writeFile(join(dst, "new-file"), "new\n");
      await mkdir(join(dst, "new-dir", "inner"), { recursive: true });
      await chmod(join(dst, "run.sh"), 0o700);
      await rm(join(dst, "private"), { recursive: true });
      await mkdir(join(dst, "private")); // deleted and made again: opaque, empty
      await rm(join(dst, "empty"), { recursive: true });
      await writeFile(join(dst, "empty"), "a file where a directory was");
      const want = await readTree(dst);
      const id = await images.snapshotDirectory(task, dst);
      assert.notEqual(id, base);
      await images.mount(task, dst2, id);
      const got = await readTree(dst2);
      assert.deepEqual(got, want);
      assert.equal(got.secret, undefined);
      assert.equal(got["sub/deep"], undefined);
      assert.equal(got["sub/big.bin"]?.type, "file");
      assert.equal(await readFile(join(dst2, "hello.txt"), "utf8"), "changed\n");
    } finally {
      await images.unmount(task, dst2).catch(() => undefined);
      await images.unmount(task, dst);
    }
  });

  it("holds what the directory held at the snapshot: later writes do not change it", async () => {
    const src = join(s.dir, "later");
    await makeTree(src);
    const id = await images.snapshotDirectory(task, src);
    await writeFile(join(src, "hello.txt"), "after the snapshot\n");
    await writeFile(join(src, "added-later"), "x");
    const dst = join(s.dir, "later-dst");
    await images.mount(task, dst, id);
    try {
      assert.equal(await readFile(join(dst, "hello.txt"), "utf8"), "hello world\n");
      await assert.rejects(stat(join(dst, "added-later")));
      // Writes under a mount go to its own layer: the image stays as it was.
      await writeFile(join(dst, "hello.txt"), "written in the mount\n");
      const again = join(s.dir, "later-dst2");
      await images.mount(task, again, id);
      assert.equal(await readFile(join(again, "hello.txt"), "utf8"), "hello world\n");
      await images.unmount(task, again);
    } finally {
      await images.unmount(task, dst);
    }
  });

  it("hides what was at the path and brings it back on unmount; remounting replaces", async () => {
    const src = join(s.dir, "hide-src");
    await makeTree(src);
    const a = await images.snapshotDirectory(task, src);
    const dst = join(s.dir, "hide-dst");
    await mkdir(dst);
    await writeFile(join(dst, "original"), "keep me");
    const before = await readTree(dst);
    await images.mount(task, dst, a);
    await assert.rejects(stat(join(dst, "original")));
    await writeFile(join(dst, "scribble"), "gone after unmount");
    await images.mount(task, dst, ""); // replaces the first mount with an empty directory
    assert.deepEqual(Object.keys(await readTree(dst)), ["."]);
    await images.unmount(task, dst);
    assert.deepEqual(await readTree(dst), before);
    // The same unmount again at once, as a replay of it would come (its answer lost): OK, and
    // nothing changes.
    await images.unmount(task, dst);
    assert.deepEqual(await readTree(dst), before);
    assert.deepEqual(r.daemon.images.mounts.list(task), []);
    // A directory nothing was unmounted from: NotFound.
    const never = join(s.dir, "never-mounted");
    await mkdir(never);
    await rejectsKind(() => images.unmount(task, never), "NotFound", /no directory is mounted/);
  });

  it("image_id errors: unknown image NOT_FOUND, nothing created", async () => {
    const dst = join(s.dir, "unknown-dst");
    await rejectsKind(
      () => images.mount(task, dst, "im-0123456789abcdef0123456789abcdef"),
      "NotFound",
    );
    await rejectsKind(() => images.mount(task, dst, "not-an-image"), "NotFound");
    await assert.rejects(stat(dst));
  });

  it("snapshot errors: missing path NOT_FOUND, a file FAILED_PRECONDITION", async () => {
    await rejectsKind(() => images.snapshotDirectory(task, join(s.dir, "nope")), "NotFound");
    await writeFile(join(s.dir, "a-file"), "x");
    await rejectsKind(
      () => images.snapshotDirectory(task, join(s.dir, "a-file")),
      "FailedPrecondition",
    );
    await rejectsKind(() => images.snapshotDirectory("no-such-task", s.dir), "NotFound");
  });

  it("task teardown removes the task's mounts (then its directory)", async () => {
    const t2 = await r.newTask();
    const t2dir = join(r.dataDir, "tasks", t2);
    const dst = join(t2dir, "work", "teardown");
    await mkdir(dst);
    await writeFile(join(dst, "under"), "u");
    await images.mount(t2, dst, "");
    await images.mount(t2, join(dst, "inner"), "");
    assert.equal(r.daemon.images.mounts.list(t2).length, 2);
    assert.equal((await mountsUnder(t2dir)).length, 2);
    await r.tasks.terminate(t2);
    assert.equal(r.daemon.images.mounts.list(t2).length, 0);
    assert.deepEqual(await mountsUnder(t2dir), []);
    await assert.rejects(stat(t2dir));
    for (const rec of r.daemon.images.mounts.list()) assert.notEqual(rec.taskId, t2);
  });

  it("over the wire: ttl_seconds rules, snapshot_id idempotency, TaskSnapshotFilesystem on host", async () => {
    const src = join(s.dir, "wire");
    await makeTree(src);
    await rejectsKind(
      () => images.snapshotDirectory(task, src, { ttlSeconds: 0 }),
      "InvalidArgument",
    );
    await rejectsKind(
      () => images.snapshotDirectory(task, src, { ttlSeconds: -7 }),
      "InvalidArgument",
    );
    const id = await images.snapshotDirectory(task, src, { snapshotId: "wire-1", ttlSeconds: -1 });
    await writeFile(join(src, "later"), "x");
    assert.equal(await images.snapshotDirectory(task, src, { snapshotId: "wire-1" }), id);
    assert.equal((await r.daemon.images.inspect(id)).meta.expiresAtMs, null);
    await rejectsKind(() => images.snapshotFilesystem(task), "FailedPrecondition", /host runtime/);
  });

  it("concurrent snapshots all succeed; the same tree gives one id", async () => {
    const dirs = ["c1", "c2", "c3"].map((n) => join(s.dir, n));
    for (const d of dirs) await makeTree(d);
    await writeFile(join(dirs[2] as string, "extra"), "3");
    const ids = await Promise.all([
      ...dirs.map((d) => images.snapshotDirectory(task, d)),
      images.snapshotDirectory(task, dirs[0] as string),
    ]);
    assert.equal(ids[0], ids[3]);
    assert.notEqual(ids[2], ids[0]);
    assert.notEqual(ids[2], ids[1]);
    for (const id of ids) assert.match(id, /^im-[0-9a-f]{32}$/);
  });
});
