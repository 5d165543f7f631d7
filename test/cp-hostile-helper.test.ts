/**
 * `taskrouter cp TASK:SRC LOCAL` against a replaced filesystem helper. A
 * process in the task can put its own program where the SDKs' helper is, so
 * what the copy reads of the task (Stat, ListFiles, ReadFile answers) is
 * hostile: the task's side here is a TaskFilesystem answering what such a
 * program would, and the local side is real files. Names that would leave
 * the copy (`..`, `a/b`, empty, repeated) refuse the copy before anything is
 * written; a file that brings more bytes than listed is an error and leaves
 * nothing; setuid/setgid bits never reach a local file.
 */
import assert from "node:assert/strict";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { copyFromTask } from "../src/cli/cp-from-task.ts";
import type { CopyContext } from "../src/cli/cp-to-task.ts";
import type { RouterClient } from "../src/client/client.ts";
import type { FileInfo, TaskFilesystem } from "../src/client/fs.ts";
import { ProgressLine } from "../src/util/progress.ts";

const info = (name: string, type: FileInfo["type"], size = 0, mode = 0o644): FileInfo => ({
  name,
  path: `/out/${name}`,
  type,
  size,
  mode: (type === "directory" ? 0o040000 : 0o100000) | mode,
  permissions: mode.toString(8).padStart(4, "0"),
  owner: "root",
  group: "root",
  modifiedTime: 0,
  symlinkTarget: null,
});

/** The task's side as a replaced helper answers it: /out lists `entries` (the rest nothing); every file reads `bytes`. */
function hostileFs(entries: FileInfo[], bytes: number): TaskFilesystem {
  return {
    stat: async (path: string) => (path === "/out" ? info("out", "directory") : info(path, "file")),
    listFiles: async (path: string) => (path === "/out" ? entries : []),
    readFile: async function* () {
      yield Buffer.alloc(bytes, 0x41);
    },
  } as unknown as TaskFilesystem;
}

const ctxWith = (fs: TaskFilesystem): CopyContext => ({
  client: undefined as unknown as RouterClient,
  fs,
  task: "t",
  followLink: false,
  progress: new ProgressLine("test", undefined, 1000),
  moved: () => {},
  parallel: 2,
});

describe("cp from a task whose filesystem helper lies", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskrouter-cp-hostile-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const name of ["..", ".", "", "../escaped", "a/b", "a\0b"]) {
    it(`a listed name ${JSON.stringify(name)} refuses the copy; nothing is written`, async () => {
      const dest = join(dir, `d-${Buffer.from(name).toString("hex")}`);
      const fs = hostileFs([info("ok", "file", 1), info(name, "file", 1)], 1);
      await assert.rejects(copyFromTask(ctxWith(fs), "/out", dest), /invalid name/);
      await assert.rejects(stat(dest), { code: "ENOENT" });
      assert.deepEqual(
        (await readdir(dir)).filter((n) => n.startsWith("escaped")),
        [],
      );
    });
  }

  it("a name listed twice refuses the copy", async () => {
    const fs = hostileFs([info("x", "directory"), info("x", "file", 1)], 1);
    await assert.rejects(copyFromTask(ctxWith(fs), "/out", join(dir, "twice")), /repeated name/);
  });

  it("a file bringing more bytes than listed is an error and leaves no file", async () => {
    const dest = join(dir, "big");
    const fs = hostileFs([info("f", "file", 1)], 64 * 1024);
    await assert.rejects(copyFromTask(ctxWith(fs), "/out", dest), /changed while it was copied/);
    assert.deepEqual(await readdir(dest), []);
  });

  it("an endless tree (each directory lists another) is refused at PATH_MAX, before anything is written", async () => {
    const dest = join(dir, "deep");
    const fs = {
      stat: async () => info("out", "directory"),
      listFiles: async () => [info("d", "directory")],
    } as unknown as TaskFilesystem;
    await assert.rejects(copyFromTask(ctxWith(fs), "/out", dest), /PATH_MAX/);
    await assert.rejects(stat(dest), { code: "ENOENT" });
  });

  it("setuid and setgid bits are dropped locally; the rest of the mode is kept", async () => {
    const dest = join(dir, "modes");
    const fs = hostileFs([info("s", "file", 1, 0o6755), info("k", "directory", 0, 0o1777)], 1);
    await copyFromTask(ctxWith(fs), "/out", dest);
    assert.equal((await stat(join(dest, "s"))).mode & 0o7777, 0o755);
    assert.equal((await stat(join(dest, "k"))).mode & 0o7777, 0o1777);
  });
});
