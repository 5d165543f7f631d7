import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { pino } from "pino";
import type { RouterClient } from "../../src/client/client.ts";
import { type Daemon, type DaemonConfig, DEFAULT_CONFIG, startDaemon } from "../../src/daemon.ts";
import { hidingV2Controllers, hybridWithV2Controllers } from "../../src/runtime/runc/cgroup.ts";
import { mountsUnder, unmountAll } from "../../src/runtime/runc/mounts.ts";
import { probeOciRuntime } from "../../src/runtime/runc/oci-cli.ts";
import { removeNetworkLeftovers } from "./net.ts";
import { collect, startRouter, type TestRouter } from "./router.ts";

const run = promisify(execFile);

const probed = new Map<string, Promise<string | undefined>>();

/** crun (Debian package crun); on hybrid-cgroup hosts the runtime hides cgroup2's controllers from it. */
export const CRUN = "/usr/bin/crun";

/** Runs OCI runtime `binary` as the runc runtime does (crun on a hybrid-cgroup host: see cgroup.ts). */
function oci(binary: string, args: string[]) {
  const [file = binary, ...rest] =
    binary === CRUN && hybridWithV2Controllers() ? hidingV2Controllers(binary) : [binary];
  return run(file, [...rest, ...args]);
}

/**
 * Why runc tests cannot run here with OCI runtime `binary` (default `runc`):
 * not root, no working runtime (for `CRUN`: crun not installed). Suites pass it as `skip` so the runner prints
 * the reason.
 */
export function runcSkipReason(binary = "runc"): Promise<string | undefined> {
  let p = probed.get(binary);
  if (!p) {
    const missing =
      (binary === CRUN && !existsSync("/usr/bin/crun")) || (binary === RUNSC && !existsSync(RUNSC));
    p = (
      missing
        ? Promise.resolve(`${binary === CRUN ? "/usr/bin/crun" : binary} is not installed`)
        : probeOciRuntime(binary)
    ).then((why) => {
      if (why) process.stdout.write(`# ${binary} tests skipped: ${why}\n`);
      return why;
    });
    probed.set(binary, p);
  }
  return p;
}

/** gVisor's OCI runtime (Debian package runsc). */
export const RUNSC = "/usr/bin/runsc";

/** The OCI runtimes the runc suites run with: runc, crun and runsc (skipped when missing). */
export const OCI_RUNTIMES = [
  { label: "runc", binary: "runc" },
  { label: "crun", binary: CRUN },
  { label: "runsc", binary: RUNSC },
] as const;

/** The container ids of runtime root `root` (`list --quiet`), or undefined when that fails. */
async function listContainers(root: string, binary: string): Promise<string[] | undefined> {
  if (!existsSync(root)) return [];
  try {
    const { stdout } = await oci(binary, ["--root", root, "list", "--quiet"]);
    return stdout.split("\n").filter((l) => l.trim() !== "");
  } catch {
    return undefined;
  }
}

/** The container ids of `root`: listed, else its entries (runc and crun keep a dir per container). */
async function containerIds(root: string, binary: string): Promise<string[]> {
  return (await listContainers(root, binary)) ?? (await readdir(root).catch(() => []));
}

/**
 * Removes whatever runc state a router left under `dataDir`: deletes every
 * container of its runtime root (by id, with `runc delete --force`), the
 * host tables and veths of its `--network open` tasks, and
 * unmounts everything below `<dataDir>/runc`. Safe to call more than once.
 */
export async function cleanupRunc(dataDir: string, binary = "runc"): Promise<void> {
  const root = join(dataDir, "runc", "state");
  for (const id of await containerIds(root, binary)) {
    await oci(binary, ["--root", root, "delete", "--force", id]).catch(() => undefined);
  }
  const left = await listContainers(root, binary);
  if (left?.length) throw new Error(`containers left in ${root}: ${left.join(" ")}`);
  await removeNetworkLeftovers(dataDir);
  await unmountAll(join(dataDir, "runc"));
}

/**
 * A test router whose tasks are runc containers by default (OCI runtime
 * `config.ociRuntime`, default `runc`). `close()`
 * terminates every task first (the router's shutdown leaves containers
 * running), then cleans up what is left even after a failed test, and only
 * removes the data dir when nothing is mounted in it.
 */
export async function startRuncRouter(config: Partial<DaemonConfig> = {}): Promise<TestRouter> {
  const r = await startRouter({ runtime: "runc", ...config });
  const close = r.close;
  let closed = false;
  r.close = async () => {
    if (closed) return;
    closed = true;
    for (const t of r.daemon.tasks.list()) {
      await r.daemon.tasks.terminate(t.id).catch(() => undefined);
    }
    await cleanupRunc(r.dataDir, config.ociRuntime);
    if ((await mountsUnder(r.dataDir)).length > 0) throw new Error(`mounts left in ${r.dataDir}`);
    await close();
  };
  return r;
}

/** A runc daemon on a data dir the caller owns (restart tests); see `cleanupRunc`. */
export async function startRuncDaemon(dataDir: string, ociRuntime = "runc"): Promise<Daemon> {
  return startDaemon(
    {
      ...DEFAULT_CONFIG,
      listen: "127.0.0.1:0",
      dataDir,
      auth: { mode: "none" },
      runtime: "runc",
      ociRuntime,
    },
    pino({ level: "silent" }),
  );
}

/** A fresh temp data dir. */
export function tempDataDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), "taskrouter-runc-"));
}

/** Removes `dataDir` after `cleanupRunc`, refusing while anything is mounted in it. */
export async function removeDataDir(dataDir: string, binary = "runc"): Promise<void> {
  await cleanupRunc(dataDir, binary);
  if ((await mountsUnder(dataDir)).length > 0) throw new Error(`mounts left in ${dataDir}`);
  await rm(dataDir, { recursive: true, force: true });
}

/** Runs `argv` in `task` and returns its status and output. */
export async function runIn(
  r: TestRouter | { client: RouterClient },
  task: string,
  argv: string[],
) {
  const id = await r.client.start(task, argv, { stdout: "pipe", stderr: "pipe" });
  const status = await r.client.wait(task, id);
  const stdout = (await collect(r.client.read(task, id, "stdout"))).toString();
  const stderr = (await collect(r.client.read(task, id, "stderr"))).toString();
  return { id, status, stdout, stderr };
}

/** The host pid of a runc task's init, from `<binary> state`. */
export async function initPid(
  r: { dataDir: string },
  task: string,
  binary = "runc",
): Promise<number> {
  const root = join(r.dataDir, "runc", "state");
  // runsc's container ids carry a prefix (RuncRuntime.containerId).
  const id = (await containerIds(root, binary)).find((c) => c === task || c.endsWith(`-${task}`));
  const { stdout } = await oci(binary, ["--root", root, "state", id ?? task]);
  return (JSON.parse(stdout) as { pid: number }).pid;
}
