import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readlink, realpath, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnCli, waitForOutput } from "./cli-run.ts";
import { killSessions } from "./procs.ts";
import { processStats } from "./router.ts";
import { cleanupRunc } from "./runc.ts";

/**
 * A real `taskrouter serve` process (no auth, silent) on a data dir of its
 * own, that a test can SIGKILL and start again on the same data dir: the
 * restart tests of execs and entrypoints.
 */
export class KillableRouter {
  dataDir: string | undefined;
  private child: ChildProcess | undefined;

  /** `args`: extra serve flags (the runtime); `oci`: the OCI runtime whose containers `stop` removes. */
  constructor(
    private readonly args: string[],
    private readonly oci?: string,
  ) {}

  /** Starts the router (the data dir is made on the first start); resolves to its address. */
  async start(): Promise<string> {
    this.dataDir ??= await mkdtemp(join(tmpdir(), "taskrouter-restart-"));
    const c = spawnCli([
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--data-dir",
      this.dataDir,
      "--auth",
      "none",
      "--log-level",
      "silent",
      ...this.args,
    ]);
    this.child = c;
    const m = (await waitForOutput(c, /listening on (\S+)/)) as unknown as string[];
    return m[1] as string;
  }

  /** SIGKILLs the router (by pid) and waits for its exit. */
  async kill9(): Promise<void> {
    const c = this.child as ChildProcess;
    const exited = once(c, "exit");
    process.kill(c.pid as number, "SIGKILL");
    await exited;
  }

  /** SIGTERM to a running router, then the OCI runtime's containers and the data dir go. */
  async stop(): Promise<void> {
    const c = this.child;
    if (c && c.exitCode === null && c.signalCode === null) {
      const exited = once(c, "exit");
      process.kill(c.pid as number, "SIGTERM");
      await exited;
    }
    if (this.dataDir) {
      if (this.oci) await cleanupRunc(this.dataDir, this.oci);
      else await killHostAgents(this.dataDir);
      await rm(this.dataDir, { recursive: true, force: true });
    }
  }
}

/**
 * SIGKILLs, by pid, host-runtime task agents under `dataDir` (their fd 3 is their
 * directory there) and the execs they started (each leads a session of its own): what a
 * test's TerminateTask would have ended had the restarted router come up. Nothing when
 * the test ended its tasks.
 */
async function killHostAgents(dataDir: string): Promise<void> {
  const stats = await processStats();
  const under = `${await realpath(dataDir)}/`; // what readlink of an fd gives
  const agents: number[] = [];
  for (const pid of stats.keys()) {
    if (pid === process.pid) continue;
    const exe = await readlink(`/proc/${pid}/exe`).catch(() => "");
    if (!exe.endsWith("/taskrouter-agent")) continue;
    const dir = await readlink(`/proc/${pid}/fd/3`).catch(() => "");
    if (dir.startsWith(under)) agents.push(pid);
  }
  if (agents.length === 0) return;
  // Fields after comm: state ppid pgrp session. Each exec leads a session of its own once
  // it called setsid; one caught before that is still in its agent's (a host agent leads one).
  const children = [...stats].filter(([, f]) => agents.includes(Number(f[1]))).map(([pid]) => pid);
  for (const pid of agents) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  await killSessions([...agents, ...children]);
}
