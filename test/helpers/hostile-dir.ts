import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RouterClient } from "../../src/client/client.ts";
import { TaskRouterError } from "../../src/errors.ts";

/**
 * What a process of a task that took over its agent can put in the agent's
 * exec directory (docs/DECISIONS.md, "The exec directory is hostile input
 * (router side)"), planted by the test (root, as that process is in its task).
 */
export type Plant = "symlink" | "fifo" | "device";

/** The kinds a test plants: the device node (/dev/null's, c 1 3) only as root. */
export const PLANTS: Plant[] =
  process.getuid?.() === 0 ? ["symlink", "fifo", "device"] : ["symlink", "fifo"];

export const MARKER = "HOST-FILE-MARKER: the router must never return or change this\n";

/** A host file holding MARKER, in a temp dir of its own (`cleanup` removes it). */
export function markerFile(): { path: string; intact: () => boolean; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "hostile-marker-"));
  const path = join(dir, "host-file");
  writeFileSync(path, MARKER);
  return {
    path,
    intact: () => readFileSync(path, "utf8") === MARKER,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Replaces whatever is at `path` with a symlink to `target`, a FIFO or /dev/null's device node. */
export function plant(path: string, kind: Plant, target: string): void {
  try {
    unlinkSync(path);
  } catch {
    // absent
  }
  if (kind === "symlink") symlinkSync(target, path);
  else if (kind === "fifo") execFileSync("mkfifo", ["-m", "600", path]);
  else execFileSync("mknod", ["-m", "600", path, "c", "1", "3"]);
}

/** The exec directory of a task's agent on this machine. */
export function agentDir(dataDir: string, task: string, runtime: "host" | "runc"): string {
  return runtime === "host"
    ? join(dataDir, "tasks", task, "agent")
    : join(dataDir, "runc", "bundles", task, "agent");
}

/**
 * The agent's KEY of exec `execId`, from the journal's last `+KEY RECORD` line
 * of it (a start retried after an agent's death has a new KEY).
 */
export function keyOf(dir: string, execId: string): string {
  const line = readFileSync(join(dir, "execs.journal"), "utf8")
    .split("\n")
    .reverse()
    .find((l) => l.startsWith("+") && l.includes(`"execId":${JSON.stringify(execId)}`));
  assert.ok(line, `exec ${execId} is in the journal`);
  return line.slice(1, 33);
}

/** Pids of host task agents whose exec directory (fd 3) is `dir`. */
export function agentPids(dir: string): number[] {
  const want = realpathSync(dir);
  const pids: number[] = [];
  for (const n of readdirSync("/proc")) {
    if (!/^\d+$/.test(n)) continue;
    try {
      if (!readlinkSync(`/proc/${n}/exe`).endsWith("taskrouter-agent")) continue;
      if (readlinkSync(`/proc/${n}/fd/3`) === want) pids.push(Number(n));
    } catch {
      // gone, or not ours to read
    }
  }
  return pids;
}

/** SIGKILLs the host agents of `dir`, by pid. */
export function killAgents(dir: string): number[] {
  const pids = agentPids(dir);
  for (const pid of pids) process.kill(pid, "SIGKILL");
  return pids;
}

/** The kind of the typed error `p` rejects with (it must reject). */
export async function errorKind(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof TaskRouterError, `a typed error, not ${String(err)}`);
    return err.kind;
  }
  assert.fail("the call succeeded");
}

/** Runs `echo ok` in `task` to its end: the router serves calls (checked by completion). */
export async function servesOther(c: RouterClient, task: string): Promise<void> {
  const id = await c.start(task, ["echo", "ok"], { stdout: "pipe" });
  assert.deepEqual(await c.wait(task, id), { code: 0 });
  const out: Buffer[] = [];
  for await (const b of c.read(task, id, "stdout")) out.push(b);
  assert.equal(Buffer.concat(out).toString(), "ok\n");
}
