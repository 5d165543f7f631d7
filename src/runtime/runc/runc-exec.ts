import { spawn as spawnChild } from "node:child_process";
import { closeSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { constants } from "node:os";
import type { Writable } from "node:stream";
import { spawnHostPty } from "../host/host-pty.ts";
import type { ExitStatus, Proc, SpawnSpec } from "../runtime.ts";
import { parseWrapperStatus, statusWithoutReport, wrapArgv } from "./exec-wrapper.ts";
import type { OciCli } from "./oci-cli.ts";
import { taskProcess } from "./oci-spec.ts";

/** What one exec needs from its task. */
export interface RuncExecContext {
  cli: OciCli;
  containerId: string;
  /** Prefix of this exec's files on the host (`.json`, `.pid`, `.status`). */
  filePrefix: string;
  /** OOM kills counted in the task's cgroup so far (undefined: unknown). */
  oomKills: () => number | undefined;
}

const POLL_PID_MS = 10;

/**
 * Starts `spec` in a running container with `<runtime> exec`, under the exec
 * wrapper (./exec-wrapper.ts). The runtime's exec process is the router's
 * child; inside the task, the wrapper leads its own session and process group
 * (runc's setsid) with the command in it, and `--pid-file` tells its host pid,
 * which is that group's id: `signalGroup` signals the group from the host, so
 * signals and timeouts reach the command's whole tree inside the task.
 */
export function spawnRuncExec(ctx: RuncExecContext, spec: SpawnSpec): Proc {
  const merge = spec.stderr === "stdout";
  const files = {
    process: `${ctx.filePrefix}.json`,
    pid: `${ctx.filePrefix}.pid`,
    status: `${ctx.filePrefix}.status`,
  };
  const process_ = taskProcess({
    args: wrapArgv(spec.argv, merge),
    env: spec.env,
    cwd: spec.cwd,
    terminal: spec.pty,
    extraCaps: spec.runtimeDebug ? ["CAP_SYS_PTRACE"] : [],
  });
  writeFileSync(files.process, JSON.stringify(process_), { mode: 0o600 });
  const args = [
    ...ctx.cli.globalArgs(),
    ...ctx.cli.execArgs(ctx.containerId, files.process, files.pid, spec.pty !== undefined),
  ];
  const oomBefore = ctx.oomKills();

  let outer: Proc;
  if (spec.pty) {
    // node-pty passes no extra fds: a host shell opens the status file as fd 3.
    outer = spawnHostPty({
      argv: ["/bin/sh", "-c", 'exec "$@" 3>"$0"', files.status, ctx.cli.binary, ...args],
      env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin" },
      cwd: "/",
      stdout: spec.stdout,
      stderr: "stdout",
      pty: spec.pty,
    });
  } else {
    const statusFd = openSync(files.status, "w", 0o600);
    try {
      outer = pipeProc(ctx.cli.binary, args, spec, statusFd);
    } finally {
      closeSync(statusFd);
    }
  }

  let done = false;
  let pgid: number | undefined;
  const pending: (NodeJS.Signals | number)[] = [];
  let poll: NodeJS.Timeout | undefined;
  const readPgid = (): number | undefined => {
    if (pgid !== undefined) return pgid;
    try {
      const n = Number.parseInt(readFileSync(files.pid, "utf8"), 10);
      if (n > 1) pgid = n;
    } catch {
      // not written yet
    }
    return pgid;
  };
  const deliver = (sig: NodeJS.Signals | number) => {
    try {
      process.kill(-(pgid as number), sig);
    } catch {
      // ESRCH: the group is gone.
    }
  };
  const flush = () => {
    poll = undefined;
    if (readPgid() !== undefined) {
      for (const s of pending.splice(0)) deliver(s);
    } else if (!done) poll = setTimeout(flush, POLL_PID_MS);
  };

  let oomKilled = false;
  const exited = outer.exited.then(async (runtimeExit): Promise<ExitStatus> => {
    done = true;
    clearTimeout(poll);
    const report = await readFile(files.status, "utf8").catch(() => "");
    const status = parseWrapperStatus(report) ?? statusWithoutReport(runtimeExit);
    // Before the pid file goes: a late signal still finds the group.
    readPgid();
    const oomAfter = ctx.oomKills();
    oomKilled =
      status.signal === constants.signals.SIGKILL &&
      oomBefore !== undefined &&
      oomAfter !== undefined &&
      oomAfter > oomBefore;
    for (const f of Object.values(files)) rmSync(f, { force: true });
    return status;
  });

  return {
    get pid() {
      return outer.pid;
    },
    stdin: outer.stdin,
    stdout: outer.stdout,
    stderr: outer.stderr,
    exited,
    get startError() {
      return outer.startError;
    },
    get oomKilled() {
      return oomKilled;
    },
    signalGroup(sig) {
      if (readPgid() !== undefined) return deliver(sig);
      if (done) return;
      // The runtime has not started the process yet: deliver once it has.
      pending.push(sig);
      poll ??= setTimeout(flush, POLL_PID_MS);
    },
    ...(outer.resize ? { resize: outer.resize.bind(outer) } : {}),
  };
}

/** The runtime's exec process with pipes; fd 3 is the wrapper's status file. */
function pipeProc(binary: string, args: string[], spec: SpawnSpec, statusFd: number): Proc {
  const child = spawnChild(binary, args, {
    cwd: "/",
    env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin" },
    detached: true,
    stdio: ["pipe", spec.stdout, spec.stderr === "pipe" ? "pipe" : "ignore", statusFd],
  });
  let startError: string | undefined;
  const exited = new Promise<ExitStatus>((resolve) => {
    child.once("exit", (code, signal) => {
      if (signal) resolve({ signal: constants.signals[signal] ?? 9 });
      else resolve({ code: code ?? 0 });
    });
    child.once("error", (err) => {
      if (child.pid !== undefined) return;
      startError = `${binary}: ${err.message}`;
      resolve({ code: 127 });
    });
  });
  (child.stdin as Writable).on("error", () => {});
  return {
    get pid() {
      return child.pid;
    },
    stdin: child.stdin as Writable,
    stdout: child.stdout,
    stderr: spec.stderr === "pipe" ? child.stderr : null,
    exited,
    get startError() {
      return startError;
    },
    signalGroup(sig) {
      try {
        if (child.pid) process.kill(-child.pid, sig);
      } catch {
        // gone
      }
    },
  };
}
