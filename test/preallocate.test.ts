/**
 * Blocks allocated ahead of a file's bytes (src/util/preallocate.ts and its
 * addon native/preallocate.c, used by `taskrouter cp` downloads): the
 * addon's allocation and argument checks, preallocate()'s fallbacks, and
 * the file a `cp` download leaves (bytes exact, no delayed allocation left
 * where the filesystem shows it). Skips the addon's own tests, saying why,
 * where it could not be built (no Node headers at install).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { preallocate } from "../src/util/preallocate.ts";
import { killAll, runCli } from "./helpers/cli-run.ts";
import { delallocUnobservable, delayedAllocation } from "./helpers/extents.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";

const ADDON = fileURLToPath(
  new URL("../build/native/taskrouter-preallocate.node", import.meta.url),
);
const skip = existsSync(ADDON)
  ? false
  : `${ADDON} was not built (node_api.h not found by native/build.sh)`;
if (skip) console.log(`# skipping addon tests: ${skip}`);
const MiB = 1 << 20;

describe("preallocate and native/preallocate.c", () => {
  let dir = "";
  let n = 0;
  const fresh = () => join(dir, `f${n++}`);
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskrouter-prealloc-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("allocate: the blocks of [0, length), size at least length; a refusal is its errno", {
    skip,
  }, async () => {
    const { allocate } = createRequire(import.meta.url)(ADDON) as {
      allocate: (fd: unknown, length: unknown) => number;
    };
    const f = await open(fresh(), "wx");
    try {
      assert.equal((await f.stat()).blocks, 0);
      assert.equal(allocate(f.fd, 3 * MiB + 1), 0);
      const st = await f.stat();
      assert.equal(st.size, 3 * MiB + 1);
      assert.ok(st.blocks * 512 >= 3 * MiB + 1, `${st.blocks} blocks`);
      assert.equal(allocate(f.fd, 0), 0, "nothing to allocate");
      for (const args of [
        [],
        [f.fd],
        [-1, 1],
        [f.fd, -1],
        [f.fd, 1.5],
        ["3", 1],
        [2 ** 31, 1],
        [f.fd, 2 ** 53],
      ]) {
        assert.throws(
          () => allocate(...(args as [unknown, unknown])),
          TypeError,
          JSON.stringify(args),
        );
      }
      assert.equal((await f.stat()).size, 3 * MiB + 1, "a refused call changed the file");
    } finally {
      await f.close();
    }
    const ro = await open(fresh(), "wx");
    await ro.close();
    const r = await open(join(dir, `f${n - 1}`), "r");
    try {
      assert.equal(allocate(r.fd, MiB), 9, "EBADF: not open for writing");
    } finally {
      await r.close();
    }
  });

  it("preallocate: true with the blocks there; false (nothing done) without the addon or a length", async (t) => {
    if (skip) return t.skip(skip);
    const f = await open(fresh(), "wx");
    try {
      assert.equal(preallocate(f.fd, 0), false);
      assert.equal(preallocate(f.fd, 2 * MiB, join(dir, "no-such-addon.node")), false);
      assert.equal((await f.stat()).blocks, 0);
      assert.equal(preallocate(f.fd, 2 * MiB), true);
      assert.ok((await f.stat()).blocks * 512 >= 2 * MiB);
      assert.equal(preallocate(f.fd, 2 ** 53), false, "past 2^53: refused, not thrown");
    } finally {
      await f.close();
    }
  });
});

describe("taskrouter cp downloads into preallocated files", () => {
  let r: TestRouter;
  let task: string;
  let dir: string;
  before(async () => {
    r = await startRouter();
    task = await r.newTask("p");
    dir = await mkdtemp(join(tmpdir(), "taskrouter-prealloc-cp-"));
  });
  after(async () => {
    await killAll();
    await r?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("leaves the exact bytes over a longer or shorter file, and no delayed allocation", async (t) => {
    const cp = (from: string, to: string) => runCli(["--server", r.address, "cp", "-q", from, to]);
    for (const size of [0, 1, 9 * MiB + 3, 5]) {
      const data = randomBytes(size);
      await writeFile(join(dir, "src"), data);
      const res = await cp(`${task}:${dir}/src`, join(dir, "dst"));
      assert.equal(res.code, 0, res.stderr);
      assert.ok((await readFile(join(dir, "dst"))).equals(data), `${size} bytes`);
      assert.equal((await stat(join(dir, "dst"))).size, size);
    }
    if (skip) return t.skip(skip);
    const why = await delallocUnobservable(dir);
    if (why) return t.skip(why);
    // To a new name (a rename over a file would have made ext4 allocate them anyway).
    await writeFile(join(dir, "src"), randomBytes(9 * MiB));
    assert.equal((await cp(`${task}:${dir}/src`, join(dir, "new"))).code, 0);
    assert.equal(
      await delayedAllocation(join(dir, "new")),
      false,
      "blocks left to delayed allocation",
    );
  });
});
