import {
  closeSync,
  constants as fsc,
  fstatSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { rm } from "node:fs/promises";
import { constants } from "node:os";
import { basename, dirname } from "node:path";
import { runTool } from "../../util/run-tool.ts";
import { spawnHostPty } from "../host/host-pty.ts";
import { nativeHelper } from "../native.ts";
import { notStartedProc } from "../program.ts";
import type { ExitStatus, Proc, SpawnSpec } from "../runtime.ts";
import type { Spawned, Spawner } from "../spawner.ts";
import { killArgv, parseWrapperStatus, statusWithoutReport, wrapArgv } from "./exec-wrapper.ts";
import type { OciCli } from "./oci-cli.ts";
import { taskProcess } from "./oci-spec.ts";
import { resizer } from "./pty-resize.ts";

/** What one exec needs from its task. */
export interface RuncExecContext {
  cli: OciCli;
  containerId: string;
  /** Starts the runtime's pipe processes (see ../spawner.ts). */
  spawner: Spawner;
  /** Prefix of this exec's files on the host (`.json`, `.pid`, `.status`). */
  filePrefix: string;
  /** OOM kills counted in the task's cgroup so far (undefined: unknown). */
  oomKills: () => number | undefined;
  /**
   * For runtimes without `--preserve-fds` (runsc): the wrapper writes its
   * status to `taskPath` in the task, a file the router reads at `hostPath`.
   */
  statusFile?: { hostPath: string; taskPath: string };
}

const POLL_PID_MS = 10;
/** The environment of the runtime's own processes (the task's env is in the process JSON). */
export const TOOL_ENV = { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin" };

/**
 * Starts `spec` in a running container with `<runtime> exec`, under the exec
 * wrapper (./exec-wrapper.ts). The runtime's exec process is the router's
 * child; inside the task, the wrapper leads its own process group (runc's
 * setsid, or its own setpgrp under crun) with the command in it, and
 * `--pid-file` tells its host pid, which is that group's id: `signalGroup`
 * signals the group from the host, so signals and timeouts reach the
 * command's whole tree inside the task. Under runsc the group lives in
 * gVisor's kernel: `--internal-pid-file` gives its id there, and a signal
 * runs `<runtime> exec TASK /.taskrouter/exec -k SIG PGID` in the task; the
 * status comes through a file (`ctx.statusFile`), the terminal through
 * `--console-socket` and native/console-relay.c. Pipe execs start through
 * the spawner (fd 3, the wrapper's report, is a pipe of the spawner's that
 * comes back with the exit); PTY execs through node-pty, fd 3 a file.
 */
export async function spawnRuncExec(ctx: RuncExecContext, spec: SpawnSpec): Promise<Proc> {
  const merge = spec.stderr === "stdout";
  const sandboxed = ctx.cli.flavor === "runsc";
  const files = {
    process: `${ctx.filePrefix}.json`,
    pid: `${ctx.filePrefix}.pid`,
    status: ctx.statusFile?.hostPath ?? `${ctx.filePrefix}.status`,
    socket: `${ctx.filePrefix}.sock`,
  };
  const process_ = taskProcess({
    args: wrapArgv(spec.argv, merge, ctx.statusFile?.taskPath, spec.deadline),
    env: spec.env,
    cwd: spec.cwd,
    terminal: spec.pty,
    extraCaps: spec.runtimeDebug ? ["CAP_SYS_PTRACE"] : [],
  });
  writeFileSync(files.process, JSON.stringify(process_), { mode: 0o600 });
  const cmd = ctx.cli.command(
    ctx.cli.execArgs(ctx.containerId, {
      processJson: files.process,
      pidFile: files.pid,
      tty: spec.pty !== undefined,
      consoleSocket: files.socket,
    }),
  );
  const oomBefore = ctx.oomKills();
  // runsc: the status file is in a directory the task can write. Made here first and
  // read through this fd only, so a file the task swaps in (a symlink to /dev/zero, a
  // FIFO) is never opened by the router: then there is simply no report.
  if (ctx.statusFile) rmSync(files.status, { force: true }); // unlink: never follows a link
  const statusFd = ctx.statusFile
    ? openSync(files.status, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600)
    : undefined;

  // The wrapper's report when it came with the exit (pipe execs without ctx.statusFile).
  let piped: string | undefined;
  let outer: Proc;
  if (spec.pty) {
    // node-pty passes no extra fds: a host shell opens the status file as fd 3
    // (runsc: the relay takes the task's terminal from the console socket).
    // The relay runs in the socket's directory: a unix socket path has at most 107 bytes.
    outer = spawnHostPty({
      argv: sandboxed
        ? [nativeHelper("taskrouter-console"), basename(files.socket), cmd.file, ...cmd.args]
        : ["/bin/sh", "-c", 'exec "$@" 3>"$0"', files.status, cmd.file, ...cmd.args],
      env: TOOL_ENV,
      cwd: sandboxed ? dirname(files.socket) : "/",
      stdout: spec.stdout,
      stderr: "stdout",
      pty: spec.pty,
    });
  } else {
    const report = !ctx.statusFile;
    outer = await ctx.spawner
      .spawn(cmd.file, cmd.args, {
        cwd: "/",
        stdout: spec.stdout,
        stderr: spec.stderr === "pipe" ? "pipe" : "ignore",
        report,
      })
      .then(
        (s) =>
          spawnedProc(s, (r) => {
            if (report) piped = r;
          }),
        (err: Error) => notStartedProc(`${cmd.file}: ${err.message}`, 127),
      );
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
    if (sandboxed) return inTaskKill(sig);
    try {
      process.kill(-(pgid as number), sig);
    } catch {
      // ESRCH: the group is gone, or not made yet: crun's exec leaves the
      // process in crun's group until the wrapper's first statement makes its
      // own, and the wrapper has forked nothing before that.
      if (done) return;
      try {
        process.kill(pgid as number, sig);
      } catch {
        // gone
      }
    }
  };
  // runsc: the task's processes are not the host's to signal; a kill runs in the task.
  let killing = Promise.resolve();
  const inTaskKill = (sig: NodeJS.Signals | number) => {
    const n = typeof sig === "number" ? sig : constants.signals[sig];
    if (n === undefined) return; // not a signal of this system
    const kill = ctx.cli.command(["exec", ctx.containerId, ...killArgv(n, pgid as number)]);
    killing = killing.then(() => runTool(kill.file, kill.args).catch(() => undefined));
  };
  const flush = () => {
    poll = undefined;
    if (readPgid() !== undefined) {
      for (const s of pending.splice(0)) deliver(s);
    } else if (!done) poll = setTimeout(flush, POLL_PID_MS);
  };

  let oomKilled = false;
  const exited = outer.exited.then((runtimeExit): ExitStatus => {
    done = true;
    clearTimeout(poll);
    // Sync reads of two tiny files: an async read costs several event-loop turns (~2 ms).
    const report = parseWrapperStatus(
      piped ?? (statusFd === undefined ? readSmall(files.status) : readOwn(statusFd)),
    );
    if (statusFd !== undefined) closeSync(statusFd);
    // The cgroup's OOM count is read only when it can matter (a SIGKILL, or no report).
    const oomGrew = () => oomBefore !== undefined && (ctx.oomKills() ?? 0) > oomBefore;
    const SIGKILL = constants.signals.SIGKILL;
    // runsc: no report and an OOM kill in the task: the whole sandbox went, and the
    // runtime's exit code says nothing about the exec.
    const status: ExitStatus =
      report ?? (sandboxed && oomGrew() ? { signal: SIGKILL } : statusWithoutReport(runtimeExit));
    // Before the pid file goes: a late signal still finds the group.
    readPgid();
    oomKilled = status.signal === SIGKILL && oomGrew();
    // Off the exit path: nothing reads these files again (a pipe exec of runc/crun has no
    // status file, only a runsc PTY exec a console socket).
    const made = [files.process, files.pid];
    if (spec.pty || ctx.statusFile) made.push(files.status);
    if (spec.pty && sandboxed) made.push(files.socket);
    for (const f of made) void rm(f, { force: true }).catch(() => undefined);
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
    ...(outer.resize ? { resize: resizer(outer, ctx.cli.relaysResize, readPgid) } : {}),
  };
}

/** The first bytes of the regular file open as `fd` (a status report is a dozen bytes). */
function readOwn(fd: number): string {
  try {
    if (!fstatSync(fd).isFile()) return "";
    const buf = Buffer.alloc(64);
    return buf.toString("utf8", 0, readSync(fd, buf, 0, buf.length, 0));
  } catch {
    return "";
  }
}

/** A small file's text, "" when it cannot be read. */
function readSmall(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

/** A spawner's process as a Proc; `onReport` gets its fd-3 bytes before `exited` resolves. */
function spawnedProc(s: Spawned, onReport: (report: string) => void): Proc {
  return {
    pid: s.pid,
    stdin: s.stdin,
    stdout: s.stdout,
    stderr: s.stderr,
    exited: s.exited.then(({ status, report }) => {
      onReport(report);
      return status;
    }),
    startError: undefined,
    signalGroup(sig) {
      try {
        process.kill(-s.pid, sig);
      } catch {
        // ESRCH: the group is gone.
      }
    },
  };
}
