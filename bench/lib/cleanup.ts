import type { ChildProcess } from "node:child_process";
import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * Everything the bench started and must undo: child processes (killed by
 * pid, never by name) and cleanup steps (containers, mounts, temp dirs) run
 * last-in first-out. `run()` is idempotent and runs on normal exit, on
 * failure and on SIGINT/SIGTERM.
 */
export class Cleanup {
  private readonly children = new Map<number, ChildProcess>();
  private readonly steps: { what: string; fn: () => Promise<void> }[] = [];
  private ran = false;

  /** Tracks a child until it exits; `run()` kills it if it is still alive. */
  child<T extends ChildProcess>(c: T): T {
    const pid = c.pid;
    if (pid === undefined) return c;
    this.children.set(pid, c);
    c.once("exit", () => this.children.delete(pid));
    return c;
  }

  /** Registers a cleanup step; returns a function that runs it now (once) and unregisters it. */
  add(what: string, fn: () => Promise<void>): () => Promise<void> {
    const step = { what, fn };
    this.steps.push(step);
    let done = false;
    return async () => {
      if (done) return;
      done = true;
      const i = this.steps.indexOf(step);
      if (i >= 0) this.steps.splice(i, 1);
      await fn();
    };
  }

  async run(): Promise<void> {
    if (this.ran) return;
    this.ran = true;
    for (const step of this.steps.reverse()) {
      try {
        await step.fn();
      } catch (err) {
        process.stderr.write(`bench: cleanup of ${step.what} failed: ${String(err)}\n`);
      }
    }
    this.steps.length = 0;
    await killAll([...this.children.keys()]);
  }
}

/** True while `pid` exists and is not a zombie. */
export async function alive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return stat !== "" && stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
}

/** SIGTERM, then SIGKILL after `graceMs` for those still alive; by pid only. */
export async function killAll(pids: number[], graceMs = 3000): Promise<void> {
  const signal = (pid: number, sig: NodeJS.Signals) => {
    try {
      process.kill(pid, sig);
    } catch {
      // already gone
    }
  };
  for (const pid of pids) signal(pid, "SIGTERM");
  const deadline = Date.now() + graceMs;
  let live = pids;
  while (live.length > 0 && Date.now() < deadline) {
    await sleep(50);
    const next: number[] = [];
    for (const p of live) if (await alive(p)) next.push(p);
    live = next;
  }
  for (const pid of live) signal(pid, "SIGKILL");
}

/** The bench's one cleanup registry (run by bench/run.ts on every exit path). */
export const cleanup = new Cleanup();
