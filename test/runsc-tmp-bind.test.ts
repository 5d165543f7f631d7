/**
 * Which rootfs /tmp a runsc task gets bound onto its /tmp (task-bundles.ts
 * `tmpToBind`; docs/DECISIONS.md, runc runtime, runsc): a real directory, never
 * a link the task or an image planted, and a missing one made first except in
 * a bundle being adopted. The bind itself is tested on runsc by
 * conformance-exec.test.ts and modal-sdk.test.ts.
 */
import assert from "node:assert/strict";
import { lstat, mkdir, mkdtemp, readlink, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { tmpToBind } from "../src/runtime/runc/task-bundles.ts";

describe("the rootfs /tmp a runsc task gets bound", () => {
  let dir: string;
  let n = 0;
  const rootfs = async () => {
    const r = join(dir, `rootfs-${++n}`);
    await mkdir(r);
    return r;
  };
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskrouter-tmpbind-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("a real directory is bound", async () => {
    const r = await rootfs();
    await mkdir(join(r, "tmp"));
    assert.equal(await tmpToBind(r, false), true);
    assert.equal(await tmpToBind(r, true), true);
  });

  it("a link is never bound, and is left as it is", async () => {
    for (const target of ["/", "/etc", "../../..", "tmp-elsewhere"]) {
      const r = await rootfs();
      await mkdir(join(r, "tmp-elsewhere"));
      await symlink(target, join(r, "tmp"));
      assert.equal(await tmpToBind(r, false), false, target);
      assert.equal(await readlink(join(r, "tmp")), target);
    }
  });

  it("a file there is not bound", async () => {
    const r = await rootfs();
    await writeFile(join(r, "tmp"), "x");
    assert.equal(await tmpToBind(r, false), false);
  });

  it("a missing /tmp is made (1777) and bound, except in a bundle being adopted", async () => {
    const adopted = await rootfs();
    assert.equal(await tmpToBind(adopted, true), false);
    await assert.rejects(lstat(join(adopted, "tmp")), { code: "ENOENT" });
    const fresh = await rootfs();
    assert.equal(await tmpToBind(fresh, false), true);
    const st = await lstat(join(fresh, "tmp"));
    assert.ok(st.isDirectory());
    assert.equal(st.mode & 0o7777, 0o1777);
  });
});
