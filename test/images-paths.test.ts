import assert from "node:assert/strict";
import { lstat, mkdir, readdir, readFile, stat, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { TaskImagesClient } from "../src/client/images.ts";
import { NotFoundError } from "../src/errors.ts";
import { ImageService, type TaskFs } from "../src/images/service.ts";
import { overlaySkipReason, rejectsKind, scratch, taskScratch } from "./helpers/images.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";

const skip = overlaySkipReason();
const b = (s: string) => Buffer.from(s);

async function exists(p: string): Promise<boolean> {
  return lstat(p).then(
    () => true,
    () => false,
  );
}

describe("image paths on the host runtime: malformed paths and symlink tricks", { skip }, () => {
  let r: TestRouter;
  let images: TaskImagesClient;
  let task: string;
  let s: Awaited<ReturnType<typeof taskScratch>>;

  before(async () => {
    r = await startRouter();
    images = new TaskImagesClient(r.client);
    task = await r.newTask();
    s = await taskScratch(r.dataDir, task); // a host task's image calls stay in its directory
  });
  after(async () => {
    await s?.cleanup();
    await r?.close();
  });

  it("refuses malformed paths with INVALID_ARGUMENT (both RPCs, and unmount)", async () => {
    const bad: (string | Uint8Array)[] = [
      "",
      "relative/dir",
      "/",
      "//",
      "/./",
      `${s.dir}/../x`,
      "/tmp/a\0b",
      b("/tmp/x/.."),
    ];
    for (const p of bad) {
      await rejectsKind(() => images.mount(task, p, ""), "InvalidArgument");
      await rejectsKind(() => images.snapshotDirectory(task, p), "InvalidArgument");
      await rejectsKind(() => images.unmount(task, p), "InvalidArgument");
    }
    assert.equal(r.daemon.images.mounts.list().length, 0);
  });

  it("refuses symlinks on the way (to /, to ../../.., as the last component) and writes nothing", async () => {
    const stamp = `taskrouter-escape-${process.pid}`;
    await symlink("/", join(s.dir, "to-root"));
    await symlink("../../../../../..", join(s.dir, "up"));
    await mkdir(join(s.dir, "real"));
    await symlink(join(s.dir, "real"), join(s.dir, "final"));
    const tricks = [
      join(s.dir, "to-root", stamp),
      join(s.dir, "up", stamp),
      join(s.dir, "to-root", "tmp", stamp),
      join(s.dir, "final"),
      join(s.dir, "final", "below"),
    ];
    for (const p of tricks) {
      await rejectsKind(() => images.mount(task, p, ""), "InvalidArgument", /symlink/);
      await rejectsKind(() => images.snapshotDirectory(task, p), "InvalidArgument", /symlink/);
    }
    assert.equal(await exists(`/${stamp}`), false);
    assert.equal(await exists(`/tmp/${stamp}`), false);
    assert.deepEqual(await readdir(join(s.dir, "real")), []);
    assert.equal(r.daemon.images.mounts.list().length, 0);
  });

  it("refuses the router's data dir, what holds it and what is in it (but the task's own dir)", async () => {
    for (const p of [
      r.dataDir,
      join(r.dataDir, "images"),
      join(r.dataDir, "images", "x"),
      "/tmp",
    ]) {
      await rejectsKind(() => images.mount(task, p, ""), "PermissionDenied", /outside/);
      await rejectsKind(() => images.snapshotDirectory(task, p), "PermissionDenied", /outside/);
    }
    const own = join(r.dataDir, "tasks", task, "work", "mnt");
    await images.mount(task, own, "");
    await images.unmount(task, own);
  });

  it("a non-directory on the way is FAILED_PRECONDITION", async () => {
    await writeFile(join(s.dir, "plain"), "x");
    await rejectsKind(
      () => images.mount(task, join(s.dir, "plain", "x"), ""),
      "FailedPrecondition",
    );
    await rejectsKind(() => images.mount(task, join(s.dir, "plain"), ""), "FailedPrecondition");
    assert.equal(await readFile(join(s.dir, "plain"), "utf8"), "x");
  });
});

describe("image paths in a task root (runc semantics: symlinks resolve inside the root)", {
  skip,
}, () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let svc: ImageService;
  let root: string;
  const outside = () => join(s.dir, "outside");

  before(async () => {
    s = await scratch();
    root = join(s.dir, "rootfs");
    await mkdir(join(root, "mnt"), { recursive: true });
    await mkdir(join(root, "etc"), { recursive: true });
    await mkdir(outside());
    await writeFile(join(outside(), "precious"), "do not touch");
    // The tricks a task can plant in its own filesystem.
    await symlink("/", join(root, "mnt", "x"));
    await symlink("../../../../../../../..", join(root, "mnt", "up"));
    await symlink("/etc", join(root, "mnt", "etc"));
    await symlink(outside(), join(root, "mnt", "host-abs")); // a host path: means root/<that> here
    await symlink("loop2", join(root, "mnt", "loop1"));
    await symlink("loop1", join(root, "mnt", "loop2"));
    const fs: TaskFs = { runtime: "fake", root, refuseSymlinks: false };
    svc = new ImageService(join(s.dir, "data"), (taskId) => {
      if (taskId !== "t") throw new NotFoundError("no task");
      return fs;
    });
    await svc.init(() => false);
  });
  after(async () => {
    await svc.teardownTask("t");
    await s.cleanup();
  });

  it("a link to / or above it resolves to the task's root, which is refused", async () => {
    for (const p of ["/mnt/x", "/mnt/up", "/mnt/x/mnt/up"]) {
      await rejectsKind(() => svc.mountDirectory("t", b(p), ""), "InvalidArgument", /root/);
      await rejectsKind(() => svc.snapshotDirectory("t", b(p), {}), "InvalidArgument", /root/);
    }
  });

  it("paths through planted links land inside the root, never outside", async () => {
    await svc.mountDirectory("t", b("/mnt/x/made-by-x"), "");
    assert.ok((await stat(join(root, "made-by-x"))).isDirectory());
    await svc.mountDirectory("t", b("/mnt/up/made-by-up"), "");
    assert.ok((await stat(join(root, "made-by-up"))).isDirectory());
    await svc.mountDirectory("t", b("/mnt/host-abs/inside"), "");
    assert.ok((await stat(join(root, outside(), "inside"))).isDirectory());
    await svc.mountDirectory("t", b("/mnt/etc"), "");
    assert.equal(svc.mounts.list("t").length, 4);
    // Nothing appeared outside the root.
    assert.deepEqual(await readdir(outside()), ["precious"]);
    assert.equal(await exists("/made-by-x"), false);
    assert.equal(await exists("/made-by-up"), false);
    for (const p of ["/mnt/x/made-by-x", "/mnt/up/made-by-up", "/mnt/host-abs/inside", "/etc"]) {
      await svc.unmountDirectory("t", b(p));
    }
    assert.equal(svc.mounts.list("t").length, 0);
  });

  it("snapshots through planted links read inside the root", async () => {
    await writeFile(join(root, "etc", "inside-file"), "mine");
    const id = await svc.snapshotDirectory("t", b("/mnt/etc"), {});
    const { manifest } = await svc.inspect(id);
    assert.deepEqual(
      manifest.entries.map((e) => e.path),
      ["", "inside-file"],
    );
  });

  it("symlink loops are INVALID_ARGUMENT", async () => {
    await rejectsKind(
      () => svc.mountDirectory("t", b("/mnt/loop1/x"), ""),
      "InvalidArgument",
      /symlinks/,
    );
  });
});
