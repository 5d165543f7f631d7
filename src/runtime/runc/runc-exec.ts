import { constants as fsc, openSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname } from "node:path";
import { procFromSpawned } from "../child-proc.ts";
import { spawnHostPty } from "../host/host-pty.ts";
import { nativeHelper } from "../native.ts";
import { notStartedProc } from "../program.ts";
import type { Proc, SpawnSpec } from "../runtime.ts";
import type { Spawner } from "../spawner.ts";
import { type ExecFiles, RuncExecProcess } from "./exec-process.ts";
import { wrapArgv } from "./exec-wrapper.ts";
import type { OciCli } from "./oci-cli.ts";
import { taskProcess } from "./oci-spec.ts";

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
   * For runtimes without `--preserve-fds` (`OciFlavor.preserveFds`): the
   * wrapper writes its status to `taskPath` in the task, a file the router
   * reads at `hostPath`.
   */
  statusFile?: { hostPath: string; taskPath: string };
}

/** The environment of the runtime's own processes (the task's env is in the process JSON). */
export const TOOL_ENV = { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin" };

/**
 * Starts `spec` in a running container with `<runtime> exec`, under the exec
 * wrapper (./exec-wrapper.ts). The runtime's exec process is the router's
 * child; inside the task, the wrapper leads its own process group (runc's
 * setsid, or its own setpgrp under crun) with the command in it, and
 * `--pid-file` tells its host pid, which is that group's id: `signalGroup`
 * signals the group from the host, so signals and timeouts reach the
 * command's whole tree inside the task. Where the group lives in the
 * runtime's own kernel (runsc, `OciFlavor.killsInTask`),
 * `--internal-pid-file` gives its id there, and a signal runs
 * `<runtime> exec TASK /.taskrouter/exec -k SIG PGID` in the task; without
 * `--preserve-fds` the status comes through a file (`ctx.statusFile`), and
 * with `consoleSocketPty` the terminal through `--console-socket` and
 * native/console-relay.c. Pipe execs start through the spawner (fd 3, the
 * wrapper's report, is a pipe of the spawner's that comes back with the
 * exit); PTY execs through node-pty, fd 3 a file. The running exec is a
 * RuncExecProcess (./exec-process.ts).
 */
export async function spawnRuncExec(ctx: RuncExecContext, spec: SpawnSpec): Promise<Proc> {
  const flavor = ctx.cli.flavor;
  const merge = spec.stderr === "stdout";
  const files: ExecFiles = {
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
  // A status file in the task: in a directory the task can write. Made here first and
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
    // (console socket: the relay takes the task's terminal from it).
    // The relay runs in the socket's directory: a unix socket path has at most 107 bytes.
    const relay = flavor.consoleSocketPty;
    outer = spawnHostPty({
      argv: relay
        ? [nativeHelper("taskrouter-console"), basename(files.socket), cmd.file, ...cmd.args]
        : ["/bin/sh", "-c", 'exec "$@" 3>"$0"', files.status, cmd.file, ...cmd.args],
      env: TOOL_ENV,
      cwd: relay ? dirname(files.socket) : "/",
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
          procFromSpawned(s, (r) => {
            if (report) piped = r;
          }),
        (err: Error) => notStartedProc(`${cmd.file}: ${err.message}`, 127),
      );
  }
  return new RuncExecProcess({
    cli: ctx.cli,
    containerId: ctx.containerId,
    files,
    outer,
    pty: spec.pty !== undefined,
    statusInTask: ctx.statusFile !== undefined,
    statusFd,
    pipedReport: () => piped,
    oomBefore,
    oomKills: ctx.oomKills,
  });
}
