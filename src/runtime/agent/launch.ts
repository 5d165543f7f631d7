import { spawn } from "node:child_process";
import { closeSync, constants as fsc, openSync } from "node:fs";
import { nativeHelper } from "../native.ts";

/** How long an agent may take to say `ready` (a guard against a hang, not a tuning knob). */
const READY_TIMEOUT_MS = 30_000;

/**
 * Runs `file args` and resolves once it printed `ready` on stdout: the
 * agent (native/task-agent.c) listens then. `fd3`: the agent's exec
 * directory, passed as fd 3 (absent: the program passes it itself). The
 * process is detached from the router (its own session) and left running.
 * Rejects with its stderr when it ends or fails first.
 */
export function startAgentProcess(
  file: string,
  args: string[],
  opts: { env: Record<string, string>; fd3?: number },
): Promise<void> {
  return new Promise((resolve, reject) => {
    const stdio: ("ignore" | "pipe" | number)[] = ["ignore", "pipe", "pipe"];
    if (opts.fd3 !== undefined) stdio.push(opts.fd3);
    const child = spawn(file, args, { detached: true, stdio, env: opts.env, cwd: "/" });
    let out = "";
    let err = "";
    let done = false;
    const finish = (e?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.stdout?.destroy();
      child.stderr?.destroy();
      child.unref();
      if (e) reject(e);
      else resolve();
    };
    const timer = setTimeout(() => {
      if (child.pid !== undefined) {
        try {
          process.kill(child.pid, "SIGKILL");
        } catch {
          // gone
        }
      }
      finish(new Error(`the task agent did not start within ${READY_TIMEOUT_MS} ms: ${err}`));
    }, READY_TIMEOUT_MS);
    child.stdout?.setEncoding("latin1").on("data", (s: string) => {
      out += s;
      if (out.includes("ready\n")) finish();
    });
    child.stderr?.setEncoding("utf8").on("data", (s: string) => {
      if (err.length < 4096) err += s;
    });
    child.once("error", (e) => finish(e));
    child.once("exit", (code, signal) => {
      // `runc exec` exits once the agent's first process forked the agent and exited
      // (native/task-agent.c): its `ready` may come just after.
      setImmediate(() => {
        if (code === 0 && !signal) {
          const ended = () => finish(new Error(`the task agent ended: ${err.trim()}`));
          if (!child.stdout || child.stdout.readableEnded) ended();
          else child.stdout.once("end", ended);
          return;
        }
        finish(
          new Error(`the task agent failed to start (${signal ?? `exit ${code}`}): ${err.trim()}`),
        );
      });
    });
  });
}

/** Starts the agent of `dir` on this machine (the host runtime's tasks). */
export async function launchHostAgent(dir: string): Promise<void> {
  const fd = openSync(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    await startAgentProcess(nativeHelper("taskrouter-agent"), [], {
      env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
      fd3: fd,
    });
  } finally {
    closeSync(fd);
  }
}
