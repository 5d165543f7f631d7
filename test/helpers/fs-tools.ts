import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, type SpawnOptions, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { nativeHelper } from "../../src/runtime/native.ts";

/** The filesystem helper native/build.sh builds from native/fs-tools.c (../shared/FS-TOOLS.md). */
export const FS_TOOLS = nativeHelper("modal-sandbox-fs-tools");

/** Fails (never skips) when the helper was not built. */
export function requireFsTools(): void {
  assert.ok(existsSync(FS_TOOLS), `${FS_TOOLS} is missing: run \`npm run build:native\``);
}

export interface RunOptions {
  /** Written to stdin, then EOF. Absent: stdin stays open (only WriteFile and Watch read it). */
  stdin?: Buffer | string;
  uid?: number;
  gid?: number;
  /** Run through `sh -c 'umask U; exec helper ...'`. */
  umask?: string;
}

export interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

export interface Started {
  child: ChildProcess;
  done: Promise<Result>;
}

const live = new Set<ChildProcess>();

/** Starts the helper: an object argument is JSON-encoded, a string passed as is, an array is all of argv. */
export function start(arg: unknown, opts: RunOptions = {}): Started {
  const argv = Array.isArray(arg)
    ? arg.map(String)
    : [typeof arg === "string" ? arg : JSON.stringify(arg)];
  const options: SpawnOptions = { stdio: "pipe" };
  if (opts.uid !== undefined) options.uid = opts.uid;
  if (opts.gid !== undefined) options.gid = opts.gid;
  const child =
    opts.umask === undefined
      ? spawn(FS_TOOLS, argv, options)
      : spawn("/bin/sh", ["-c", `umask ${opts.umask}; exec "$0" "$@"`, FS_TOOLS, ...argv], options);
  live.add(child);
  const stdin = child.stdin;
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout?.on("data", (b: Buffer) => out.push(b));
  child.stderr?.on("data", (b: Buffer) => err.push(b));
  stdin?.on("error", () => {}); // EPIPE once the helper exited without reading
  if (opts.stdin !== undefined) stdin?.end(opts.stdin);
  const done = new Promise<Result>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => {
      live.delete(child);
      stdin?.destroy();
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() });
    });
  });
  return { child, done };
}

export function run(arg: unknown, opts: RunOptions = {}): Promise<Result> {
  return start(arg, opts).done;
}

/** SIGKILLs, by pid, every helper a test started that is still running. */
export function killLeftovers(): void {
  for (const child of live) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  }
}

const temps: string[] = [];

/** A fresh temporary directory, removed by removeTemps(). */
export async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "fs-tools-"));
  temps.push(dir);
  return dir;
}

export async function removeTemps(): Promise<void> {
  for (const dir of temps.splice(0)) await rm(dir, { recursive: true, force: true });
}

/** A success: exit 0, stderr empty. Returns stdout. */
export function ok(r: Result): Buffer {
  assert.equal(r.stderr, "", "stderr of a success");
  assert.deepEqual([r.code, r.signal], [0, null], "exit of a success");
  return r.stdout;
}

export function json<T>(r: Result): T {
  return JSON.parse(ok(r).toString()) as T;
}

export interface ErrorPayload {
  error_kind: string;
  message: string;
  detail: string;
}

/**
 * A failure: exit 1, stderr exactly one JSON object with string error_kind
 * (`kind`), a non-empty message not naming `path`, a string detail.
 */
export function fails(r: Result, kind: string, path?: string): ErrorPayload {
  assert.deepEqual([r.code, r.signal], [1, null], `exit of a failure (stderr: ${r.stderr})`);
  const e = JSON.parse(r.stderr.trim()) as Record<string, unknown>;
  assert.ok(e !== null && typeof e === "object" && !Array.isArray(e), r.stderr);
  assert.equal(e.error_kind, kind, r.stderr);
  assert.equal(typeof e.message, "string");
  assert.notEqual(e.message, "");
  assert.equal(typeof e.detail, "string");
  if (path !== undefined) assert.ok(!String(e.message).includes(path), `message names the path`);
  return e as unknown as ErrorPayload;
}

/** What FS-TOOLS.md section 3 specifies of an entry. */
export interface Entry {
  name: string;
  path: string;
  type: "file" | "directory" | "symlink";
  size: number;
  mode: number;
  permissions: string;
  owner: string;
  group: string;
  modified_time: number;
  symlink_target: string | null;
}

/** `stat -c` (lstat) of a path: mode in hex, permissions, owner, group, mtime, size. */
export function statC(path: string): {
  mode: number;
  perms: string;
  owner: string;
  group: string;
  mtime: number;
  size: number;
} {
  const line = execFileSync("stat", ["-c", "%f|%a|%U|%G|%Y|%s", path]).toString().trim();
  const [f, a, u, g, y, s] = line.split("|") as [string, string, string, string, string, string];
  return {
    mode: Number.parseInt(f, 16),
    perms: a.padStart(4, "0"),
    owner: u,
    group: g,
    mtime: Number(y),
    size: Number(s),
  };
}

/** Checks an entry against `stat -c` of its path. */
export function matchesStat(e: Entry, path = e.path): void {
  const s = statC(path);
  assert.equal(e.mode, s.mode, `mode of ${e.name}`);
  assert.equal(e.permissions, s.perms, `permissions of ${e.name}`);
  assert.match(e.permissions, /^\d{4}$/);
  assert.equal(e.owner, s.owner, `owner of ${e.name}`);
  assert.equal(e.group, s.group, `group of ${e.name}`);
  assert.ok(Math.abs(e.modified_time - s.mtime) <= 1, `mtime of ${e.name}`);
  assert.ok(Number.isInteger(e.size), `size of ${e.name}`);
  assert.equal(e.size, s.size, `size of ${e.name}`);
}
