import assert from "node:assert/strict";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { NotFoundError } from "../src/errors.ts";
import { RecentUnmounts } from "../src/images/recent-unmounts.ts";
import { ImageService, type TaskFs } from "../src/images/service.ts";
import { makeTree, rejectsKind, scratch } from "./helpers/images.ts";
import { readTree } from "./helpers/tree.ts";

const b = (s: string) => Buffer.from(s);

/** Copy mode: what a router that is not root does instead of overlay mounts. */
describe("image mounts in copy mode (no overlay)", () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let svc: ImageService;

  before(async () => {
    s = await scratch();
    const fs: TaskFs = { runtime: "host", root: "/", refuseSymlinks: true };
    svc = new ImageService(
      join(s.dir, "data"),
      (t) => {
        if (t !== "t") throw new NotFoundError("no task");
        return fs;
      },
      { mountMode: "copy" },
    );
    await svc.init(() => false);
  });
  after(async () => {
    await svc.teardownTask("t");
    await s.cleanup();
  });

  it("copies the tree in, hides what was there, and puts it back on unmount", async () => {
    const src = join(s.dir, "src");
    await makeTree(src);
    const id = await svc.snapshotDirectory("t", b(src), {});
    const dst = join(s.dir, "dst");
    await mkdir(dst);
    await writeFile(join(dst, "original"), "keep me");
    await svc.mountDirectory("t", b(dst), id);
    assert.deepEqual(
      await readTree(dst, { withTimes: true }),
      await readTree(src, { withTimes: true }),
    );
    await writeFile(join(dst, "hello.txt"), "changed in the copy\n");
    const next = await svc.snapshotDirectory("t", b(dst), {});
    assert.notEqual(next, id);
    // Mounting again replaces the copy (the original stays hidden).
    await svc.mountDirectory("t", b(dst), "");
    assert.deepEqual(await readdir(dst), []);
    await svc.unmountDirectory("t", b(dst));
    assert.deepEqual(await readdir(dst), ["original"]);
    assert.equal(await readFile(join(dst, "original"), "utf8"), "keep me");
    assert.deepEqual(
      (await readdir(s.dir)).filter((n) => n.includes("taskrouter-hidden")),
      [],
    );
    // The same unmount again at once, as its replay would come (its answer lost): OK, and
    // nothing changes.
    await svc.unmountDirectory("t", b(dst));
    assert.deepEqual(await readdir(dst), ["original"]);
    assert.deepEqual(svc.mounts.list("t"), []);
    // The image never changed.
    const again = join(s.dir, "again");
    await svc.mountDirectory("t", b(again), id);
    assert.equal(await readFile(join(again, "hello.txt"), "utf8"), "hello world\n");
    await svc.teardownTask("t");
    assert.deepEqual(await readdir(s.dir).then((l) => l.includes("again")), false);
  });

  it("replays of an unmount: OK within the window, also where the copy's directory went with it", async () => {
    let now = 0;
    const replays = new ImageService(
      join(s.dir, "data"),
      (t) => {
        if (t !== "r") throw new NotFoundError("no task");
        return { runtime: "host", root: "/", refuseSymlinks: true };
      },
      { mountMode: "copy", recentUnmounts: new RecentUnmounts(60_000, 64, () => now) },
    );
    await replays.init(() => false);
    const made = join(s.dir, "made-by-the-mount");
    await replays.mountDirectory("r", b(made), "");
    await replays.unmountDirectory("r", b(made));
    assert.equal(await readdir(made).catch(() => "gone"), "gone", "the copy's directory went");
    // A replay, spelled as the SDK may send it (the same path as the router resolves it).
    await replays.unmountDirectory("r", b(`${made}/`));
    now += 60_000;
    await rejectsKind(() => replays.unmountDirectory("r", b(made)), "NotFound");
    // A path nothing was unmounted from; and one unmounted before the task's teardown, which
    // forgets the task's records.
    await rejectsKind(() => replays.unmountDirectory("r", b(join(s.dir, "never"))), "NotFound");
    const again = join(s.dir, "mounted-again");
    await replays.mountDirectory("r", b(again), "");
    await replays.unmountDirectory("r", b(again));
    await replays.teardownTask("r");
    await rejectsKind(() => replays.unmountDirectory("r", b(again)), "NotFound");
    assert.deepEqual(replays.mounts.list("r"), []);
  });
});
