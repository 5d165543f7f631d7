/**
 * Downloads written around the page cache (src/util/direct-file.ts and its
 * addon native/aligned-buffer.c, used by `taskrouter cp` for files of 8 MiB
 * and more): the addon's argument checks, the writer's bytes at every
 * boundary of its buffers, what it leaves in the page cache (fincore), its
 * fallbacks, and a `cp` download through a router. Skips, saying why, where
 * the addon could not be built (no Node headers at install), and the page
 * cache checks where the temp dir's filesystem keeps written pages anyway
 * (tmpfs) or fincore is missing.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { constants, existsSync, readdirSync } from "node:fs";
import { mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { DIRECT_STEP, type DirectFileOptions, DirectFileWriter } from "../src/util/direct-file.ts";
import { killAll, runCli } from "./helpers/cli-run.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";

const ADDON = fileURLToPath(new URL("../build/native/taskrouter-aligned.node", import.meta.url));
const skip = existsSync(ADDON)
  ? false
  : `${ADDON} was not built (node_api.h not found by native/build.sh)`;
if (skip) console.log(`# skipping direct-write tests: ${skip}`);
const MiB = 1 << 20;

const PAGE = Number(execFileSync("getconf", ["PAGESIZE"], { encoding: "utf8" }).trim());
/** `n` rounded up to whole pages. */
const pages = (n: number) => Math.ceil(n / PAGE) * PAGE;

/** Bytes of `path` in the page cache (fincore); undefined when fincore is not installed. */
function cached(path: string): number | undefined {
  try {
    const out = execFileSync("fincore", ["--bytes", "--noheadings", "--output", "RES", path], {
      encoding: "utf8",
    });
    return Number(out.trim());
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/**
 * Why files in `dir` are not written around the page cache here (the writer
 * is then rightly not used), or false: a filesystem the writer leaves alone
 * (tmpfs, network: see LOCAL_DISK in src/util/direct-file.ts) or one that
 * refuses O_DIRECT.
 */
async function noDirect(dir: string): Promise<string | false> {
  const fs = execFileSync("stat", ["-f", "-c", "%T", dir], { encoding: "utf8" }).trim();
  if (!/^(ext2\/ext3|xfs|btrfs)$/.test(fs))
    return `${dir} is on ${fs}: not written around the page cache`;
  const probe = join(dir, ".direct-probe");
  try {
    await (await open(probe, constants.O_CREAT | constants.O_WRONLY | constants.O_DIRECT)).close();
    return false;
  } catch (err) {
    return `${dir} refuses O_DIRECT: ${(err as Error).message}`;
  } finally {
    await rm(probe, { force: true });
  }
}

/** Writes `data` through a DirectFileWriter in pieces of the given sizes (cycled). */
async function writeThrough(
  path: string,
  data: Buffer,
  pieces: number[],
  opts: DirectFileOptions = {},
): Promise<number> {
  const f = await open(path, "wx", 0o600);
  try {
    const w = await DirectFileWriter.open(f, opts);
    assert.ok(w, "no writer where O_DIRECT and the addon are there");
    let off = 0;
    for (let i = 0; off < data.length; i++) {
      const n = Math.min(pieces[i % pieces.length] as number, data.length - off);
      await w.write(data.subarray(off, off + n));
      off += n;
    }
    return await w.end();
  } finally {
    await f.close();
  }
}

describe("DirectFileWriter and native/aligned-buffer.c", () => {
  let dir = "";
  let direct: string | false = "not probed";
  let n = 0;
  const fresh = () => join(dir, `f${n++}`);
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskrouter-direct-"));
    direct = skip || (await noDirect(dir));
    if (direct) console.log(`# skipping direct writes: ${direct}`);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("aligned: an ArrayBuffer of the length asked; anything but a multiple of 4096 in [4096, 256 MiB] is a TypeError", {
    skip,
  }, () => {
    const { aligned } = createRequire(import.meta.url)(ADDON) as {
      aligned: (n: unknown) => ArrayBuffer;
    };
    assert.equal(aligned(4096).byteLength, 4096);
    assert.equal(aligned(8 * MiB).byteLength, 8 * MiB);
    for (const bad of [undefined, 0, 100, 4097, -4096, 4096.5, "4096", 512 * MiB]) {
      assert.throws(() => aligned(bad), TypeError, String(bad));
    }
  });

  it("writes exact bytes at every boundary of its buffers, whatever the pieces", async (t) => {
    if (direct) return t.skip(direct);
    const S = DIRECT_STEP;
    for (const size of [0, 1, 4095, 4096, S - 1, S, S + 1, 2 * S + 4097, 3 * S + 123]) {
      for (const pieces of [[size || 1], [1 * MiB], [65536 + 7, 3, 1000003]]) {
        const data = randomBytes(size);
        const path = fresh();
        assert.equal(await writeThrough(path, data, pieces), size);
        assert.ok((await readFile(path)).equals(data), `${size} bytes in pieces ${pieces}`);
      }
    }
  });

  it("leaves only the last partial block in the page cache", async (t) => {
    if (direct) return t.skip(direct);
    const data = randomBytes(3 * DIRECT_STEP + 5000);
    const path = fresh();
    await writeThrough(path, data, [MiB]);
    const res = cached(path);
    if (res === undefined) return t.skip("fincore is not installed");
    assert.ok(res <= pages(5000), `${res} bytes of ${data.length} in the page cache`);
    assert.ok((await readFile(path)).equals(data));
  });

  it("writes through the page cache what the filesystem refuses to take directly", async (t) => {
    if (direct) return t.skip(direct);
    // Memory one byte past an aligned start: every direct write of it fails with EINVAL.
    const allocate = (len: number) => new Uint8Array(len + PAGE).subarray(1, len + 1);
    const data = randomBytes(3 * DIRECT_STEP + 77);
    const path = fresh();
    assert.equal(await writeThrough(path, data, [MiB + 3], { allocate }), data.length);
    const res = cached(path);
    assert.ok((await readFile(path)).equals(data));
    if (res === undefined) return t.skip("fincore is not installed");
    assert.ok(res >= 2 * DIRECT_STEP, `${res} bytes in the page cache: the refusal was not seen`);
  });

  it("is not there without the addon, nor on tmpfs; its caller then writes as before", async (t) => {
    const f = await open(fresh(), "wx");
    try {
      const addon = join(dir, "no-such-addon.node");
      assert.equal(await DirectFileWriter.open(f, { addon }), undefined);
    } finally {
      await f.close();
    }
    if (skip) return t.skip(skip);
    if (!existsSync("/dev/shm")) return t.skip("no /dev/shm");
    const shm = await mkdtemp("/dev/shm/taskrouter-direct-");
    try {
      const g = await open(join(shm, "f"), "wx");
      try {
        assert.equal(await DirectFileWriter.open(g), undefined, "a writer on tmpfs");
      } finally {
        await g.close();
      }
    } finally {
      await rm(shm, { recursive: true, force: true });
    }
  });

  it("reports a write that fails, and abort closes its descriptor; then it is done", async (t) => {
    if (direct) return t.skip(direct);
    const fds = () => readdirSync("/proc/self/fd").length;
    const before = fds();
    const f = await open(fresh(), "wx");
    const w = await DirectFileWriter.open(f);
    assert.ok(w);
    try {
      await f.close(); // the buffered descriptor gone: the tail write must fail
      await w.write(Buffer.alloc(10));
      await assert.rejects(w.end(), { code: "EBADF" });
    } finally {
      await w.abort();
    }
    assert.equal(fds(), before, "a descriptor left open");
    await assert.rejects(w.write(Buffer.alloc(1)), /used after end\(\) or abort\(\)/);
    await assert.rejects(w.end(), /used after end\(\) or abort\(\)/);
  });
});

describe("taskrouter cp downloads around the page cache", () => {
  let r: TestRouter;
  let task: string;
  let dir: string;
  before(async () => {
    r = await startRouter();
    task = await r.newTask("d");
    dir = await mkdtemp(join(tmpdir(), "taskrouter-direct-cp-"));
  });
  after(async () => {
    await killAll();
    await r?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("a file of 8 MiB and more: exact bytes, not left in the page cache; a smaller one as before", async (t) => {
    const cp = (from: string, to: string) => runCli(["--server", r.address, "cp", "-q", from, to]);
    const big = randomBytes(21 * MiB + 3);
    const small = randomBytes(MiB + 1);
    await writeFile(join(dir, "big"), big);
    await writeFile(join(dir, "small"), small);
    const inCache: Record<string, number | undefined> = {};
    for (const name of ["big", "small"]) {
      const res = await cp(`${task}:${dir}/${name}`, join(dir, `${name}.out`));
      assert.equal(res.code, 0, res.stderr);
      inCache[name] = cached(join(dir, `${name}.out`)); // before a read brings it in
    }
    assert.ok((await readFile(join(dir, "big.out"))).equals(big), "big");
    assert.ok((await readFile(join(dir, "small.out"))).equals(small), "small");
    const why = skip || (await noDirect(dir));
    if (why) return t.skip(why);
    const { big: bigCached, small: smallCached } = inCache;
    if (bigCached === undefined) return t.skip("fincore is not installed");
    assert.ok(bigCached <= PAGE, `${bigCached} bytes of the large download in the page cache`);
    assert.equal(smallCached, pages(small.length), "the small one");
  });
});
