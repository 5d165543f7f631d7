import assert from "node:assert/strict";
import { constants } from "node:fs";
import { chmod, mkdir, open, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { NotFoundError } from "../src/errors.ts";
import { openFd } from "../src/images/fdio.ts";
import { detachMount, mountOverlay } from "../src/images/overlay.ts";
import { ImageService, type TaskFs } from "../src/images/service.ts";
import { timeOf } from "../src/images/unpack.ts";
import { overlaySkipReason, scratch } from "./helpers/images.ts";

const skip = overlaySkipReason();
const b = (s: string) => Buffer.from(s);

/**
 * TaskSnapshotFilesystem against a task root made here (what the runc runtime
 * gives: a root directory, optionally an overlay over one of our images).
 */
describe("TaskSnapshotFilesystem (domain, a task root made by the test)", { skip }, () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let svc: ImageService;
  const reads: string[] = [];
  const fs: TaskFs = { runtime: "fake", root: "", refuseSymlinks: false };

  before(async () => {
    s = await scratch();
    fs.root = join(s.dir, "root");
    await mkdir(join(fs.root, "etc"), { recursive: true });
    await writeFile(join(fs.root, "etc", "conf"), "c");
    svc = new ImageService(
      join(s.dir, "data"),
      (t) => {
        if (t !== "t") throw new NotFoundError("no task");
        return fs;
      },
      {
        openFile: (p) => {
          reads.push(p.toString());
          return openFd(p, constants.O_RDONLY | constants.O_NOFOLLOW);
        },
      },
    );
    await svc.init(() => false);
  });
  after(async () => {
    await svc.teardownTask("t");
    await s.cleanup();
  });

  it("captures the whole root but not the content of directories mounted into it", async () => {
    await svc.mountDirectory("t", b("/data"), "");
    await writeFile(join(fs.root, "data", "in-mount"), "not part of the root");
    const id = await svc.snapshotFilesystem("t", { ttlSeconds: 2_592_000n });
    const paths = (await svc.inspect(id)).manifest.entries.map((e) => e.path);
    assert.deepEqual(paths, ["", "data", "etc", "etc/conf"]);
    await svc.unmountDirectory("t", b("/data"));
  });

  it("a root that is an overlay over an image is snapshotted incrementally", async () => {
    await mkdir(join(s.dir, "base", "lib"), { recursive: true });
    for (let i = 0; i < 50; i++) await writeFile(join(s.dir, "base", "lib", `f${i}`), `${i}`);
    const saved = fs.root;
    fs.root = "/"; // snapshot the base from the host side
    fs.refuseSymlinks = true;
    const base = await svc.snapshotDirectory("t", b(join(s.dir, "base")), {});
    fs.root = saved;
    fs.refuseSymlinks = false;
    // Build the task root the way a runtime would: overlay(lower = unpacked image).
    const { dir: lower, release } = await svc.acquireUnpacked(base);
    const root = join(s.dir, "oroot");
    for (const d of ["upper", "work"]) await mkdir(join(s.dir, d));
    // The overlay's root shows the upper directory's attributes: a runtime gives it the image's.
    const top = (await svc.inspect(base)).manifest.entries[0];
    assert.ok(top);
    await chmod(join(s.dir, "upper"), top.mode);
    await utimes(join(s.dir, "upper"), timeOf(top.mtimeNs), timeOf(top.mtimeNs));
    await mkdir(root);
    const fh = await open(root, constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      await mountOverlay(fh.fd, {
        cwd: s.dir,
        lower: lower.slice(s.dir.length + 1),
        upper: "upper",
        work: "work",
      });
    } finally {
      await fh.close();
    }
    const rootFh = await open(root, constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      fs.root = root;
      fs.rootLayers = { imageId: base, upper: join(s.dir, "upper") };
      reads.length = 0;
      assert.equal(await svc.snapshotFilesystem("t", { ttlSeconds: 2_592_000n }), base);
      assert.equal(reads.length, 0);
      await writeFile(join(root, "lib", "f7"), "changed");
      const next = await svc.snapshotFilesystem("t", { ttlSeconds: 2_592_000n });
      assert.equal(reads.length, 1);
      assert.notEqual(next, base);
      const entries = (await svc.inspect(next)).manifest.entries;
      assert.equal(entries.length, 52);
    } finally {
      fs.root = saved;
      delete fs.rootLayers;
      await detachMount(rootFh.fd);
      await rootFh.close();
      release();
    }
  });
});
