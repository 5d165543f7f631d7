import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { realpathSync } from "node:fs";
import {
  chmod,
  copyFile,
  mkdir,
  mkdtemp,
  readdir,
  rm,
  symlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { TaskRouterError } from "../../src/errors.ts";
import { mountsUnder, unmountAll } from "../../src/runtime/runc/mounts.ts";

/** Why overlay mount tests cannot run here, printed once; undefined when they can. */
export function overlaySkipReason(): string | undefined {
  if (process.getuid?.() === 0) return undefined;
  const why = "not running as root (overlay mounts need root)";
  process.stdout.write(`# image mount tests skipped: ${why}\n`);
  return why;
}

/** A scratch directory for a test; `cleanup` unmounts anything left below it, then removes it. */
export async function scratch(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "taskrouter-img-"));
  return {
    dir,
    cleanup: async () => {
      await unmountAll(dir).catch(() => undefined);
      if ((await mountsUnder(dir)).length > 0) throw new Error(`mounts left under ${dir}`);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A scratch directory inside a host task's own directory (where the image
 * calls of a host task are confined); `cleanup` as for `scratch`.
 */
export async function taskScratch(
  dataDir: string,
  taskId: string,
): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = join(dataDir, "tasks", taskId, "work", "scratch");
  await mkdir(dir, { recursive: true });
  return {
    dir,
    cleanup: async () => {
      await unmountAll(dir).catch(() => undefined);
      if ((await mountsUnder(dir)).length > 0) throw new Error(`mounts left under ${dir}`);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A small tree with every kind of entry an image keeps: files of several
 * modes (one empty, one over a MiB), a symlink (relative, absolute,
 * dangling), empty directories, nested directories, a name with a space.
 */
export async function makeTree(dir: string): Promise<void> {
  await mkdir(join(dir, "sub", "deep", "deeper"), { recursive: true });
  await mkdir(join(dir, "empty"), { recursive: true });
  await mkdir(join(dir, "private"), { recursive: true });
  await writeFile(join(dir, "hello.txt"), "hello world\n");
  await writeFile(join(dir, "empty-file"), "");
  await writeFile(join(dir, "run.sh"), "#!/bin/sh\necho hi\n");
  await chmod(join(dir, "run.sh"), 0o755);
  await writeFile(join(dir, "secret"), "s3cr3t");
  await chmod(join(dir, "secret"), 0o600);
  await writeFile(join(dir, "with space"), "spaced");
  await writeFile(join(dir, "sub", "deep", "deeper", "leaf"), "leaf\n");
  await writeFile(join(dir, "sub", "big.bin"), Buffer.alloc(1536 * 1024, 7));
  await writeFile(join(dir, "sub", "dup-of-hello"), "hello world\n");
  await symlink("hello.txt", join(dir, "link-rel"));
  await symlink("/etc/hostname", join(dir, "link-abs"));
  await symlink("does/not/exist", join(dir, "link-dangling"));
  await chmod(join(dir, "private"), 0o700);
  await utimes(join(dir, "hello.txt"), 1_600_000_000.123456, 1_600_000_000.123456);
}

/** Asserts that `fn` rejects with a TaskRouterError of `kind` (and a message matching `re`). */
export async function rejectsKind(fn: () => Promise<unknown>, kind: string, re?: RegExp) {
  await assert.rejects(fn, (err: unknown) => {
    assert.ok(err instanceof TaskRouterError, `not a TaskRouterError: ${String(err)}`);
    assert.equal(err.kind, kind, err.message);
    if (re) assert.match(err.message, re);
    return true;
  });
}

/** The blob files of a data dir's image store. */
export async function blobFiles(dataDir: string): Promise<string[]> {
  return (await readdir(join(dataDir, "images", "blobs", "sha256")).catch(() => [])).sort();
}

/** Copies host program `bin` to `dest` inside `root`, with the libraries and loader `ldd` lists. */
export async function copyProgram(root: string, bin: string, dest: string): Promise<void> {
  const put = async (from: string, to: string) => {
    await mkdir(dirname(join(root, to)), { recursive: true });
    await copyFile(realpathSync(from), join(root, to));
    await chmod(join(root, to), 0o755);
  };
  await put(bin, dest);
  for (const line of execFileSync("ldd", [bin], { encoding: "utf8" }).split("\n")) {
    const lib = /=>\s*(\/\S+)/.exec(line)?.[1] ?? /^\s*(\/\S+)\s/.exec(line)?.[1];
    if (lib) await put(lib, lib);
  }
}
