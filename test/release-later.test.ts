/**
 * src/util/release-later.ts: which files it holds across a rename, and that
 * a held file, once replaced, is let go by a child: this process's descriptor
 * closed when release() resolves, and no process holding it soon after.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  link,
  mkdir,
  mkdtemp,
  readdir,
  readlink,
  rename,
  rm,
  symlink,
  truncate,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { holdReplaced, RELEASE_FROM } from "../src/util/release-later.ts";
import { noHolderOfReplaced } from "./helpers/holders.ts";

/** This process's descriptors that refer to `target` (a /proc link text). */
async function ownFdsOf(target: string): Promise<string[]> {
  const fds: string[] = [];
  for (const fd of await readdir("/proc/self/fd")) {
    if ((await readlink(`/proc/self/fd/${fd}`).catch(() => "")) === target) fds.push(fd);
  }
  return fds;
}

describe("holdReplaced (src/util/release-later.ts)", () => {
  let dir: string;
  const p = (n: string) => join(dir, n);
  /** A file of `size` bytes (sparse: only its size matters here). */
  const sized = async (name: string, size: number) => {
    await writeFile(p(name), "");
    await truncate(p(name), size);
  };
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskrouter-release-"));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("holds a big file with one name; once it is replaced, release() hands it to a child that lets it go", async () => {
    await sized("big", RELEASE_FROM);
    const held = await holdReplaced(p("big"));
    assert.ok(held, "a file of RELEASE_FROM bytes with one name is held");
    await writeFile(p("new"), "new");
    await rename(p("new"), p("big"));
    // The rename freed nothing: this process still has the old file.
    assert.equal((await ownFdsOf(`${p("big")} (deleted)`)).length, 1);
    await held.release();
    assert.deepEqual(await ownFdsOf(`${p("big")} (deleted)`), [], "our descriptor is closed");
    await noHolderOfReplaced(p("big"));
  });

  it("close() when the file was not replaced: the descriptor closed, the file as it was", async () => {
    await sized("kept", RELEASE_FROM);
    const held = await holdReplaced(p("kept"));
    assert.ok(held);
    await held.close();
    assert.deepEqual(await ownFdsOf(p("kept")), []);
  });

  it("holds nothing else: smaller, another name, a symlink, a FIFO, a directory, nothing there", async () => {
    await sized("small", RELEASE_FROM - 1);
    await sized("linked", RELEASE_FROM);
    await link(p("linked"), p("other-name"));
    await sized("target", RELEASE_FROM);
    await symlink(p("target"), p("symlink"));
    execFileSync("mkfifo", [p("fifo")]);
    await mkdir(p("dir"));
    for (const name of ["small", "linked", "symlink", "fifo", "dir", "missing"]) {
      assert.equal(await holdReplaced(p(name)), undefined, name);
    }
    assert.deepEqual(await ownFdsOf(p("target")), []);
  });
});
