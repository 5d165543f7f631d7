import { closeSync, fstatSync, readFileSync, readSync } from "node:fs";
import { rm } from "node:fs/promises";
import { constants } from "node:os";
import type { Readable, Writable } from "node:stream";
import { runTool } from "../../util/run-tool.ts";
import type { ExitStatus, Proc } from "../runtime.ts";
import { killArgv, parseWrapperStatus, statusWithoutReport } from "./exec-wrapper.ts";
import type { OciCli } from "./oci-cli.ts";
import { resizer } from "./pty-resize.ts";

const POLL_PID_MS = 10;
const SIGKILL = constants.signals.SIGKILL;

/** The host files of one exec (see RuncExecContext.filePrefix). */
export interface ExecFiles {
  /** The OCI process JSON given to `exec --process`. */
  process: string;
  /** Where the runtime writes the wrapper's pid (its process group's id). */
  pid: string;
  /** The wrapper's status report when it does not come with the exit. */
  status: string;
  /** The console socket (`OciFlavor.consoleSocketPty`). */
  socket: string;
}

/** How an exec was started, for its RuncExecProcess. */
export interface ExecStart {
  cli: OciCli;
  containerId: string;
  files: ExecFiles;
  /** The `<runtime> exec` process (its pipes or terminal are the exec's). */
  outer: Proc;
  pty: boolean;
  /** The status file is in the task (`!OciFlavor.preserveFds`): it is removed at the end. */
  statusInTask: boolean;
  /** The status file, opened by the router before the start (read only through it); see runc-exec.ts. */
  statusFd: number | undefined;
  /** The wrapper's report when it came with the exit (set before `outer.exited` resolves). */
  pipedReport: () => string | undefined;
  /** OOM kills counted in the task's cgroup: before the start, and now. */
  oomBefore: number | undefined;
  oomKills: () => number | undefined;
}

/**
 * One exec in a container, as a Proc: the `<runtime> exec` process `outer`
 * gives the pipes; the exec wrapper inside the task leads the command's
 * process group, whose id comes from the pid file once the runtime wrote it.
 * Signals go to that group: from the host (`kill(-pgid)`), or for a runtime
 * whose task processes the host cannot signal (`OciFlavor.killsInTask`)
 * through the wrapper's kill run in the task, one at a time. Signals sent
 * before the pid file exists are held and delivered once it does. At the
 * end, the exit status is the wrapper's report (the runtime's own exit code
 * only without one), and the exec's files are removed.
 */
export class RuncExecProcess implements Proc {
  readonly stdin: Writable;
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
  readonly exited: Promise<ExitStatus>;
  /** Present for PTY execs only (`declare`: no field at all otherwise). */
  declare readonly resize?: (rows: number, cols: number) => void;
  private done = false;
  private pgid: number | undefined;
  private readonly pending: (NodeJS.Signals | number)[] = [];
  private poll: NodeJS.Timeout | undefined;
  /** The in-task kills, one after the other. */
  private killing = Promise.resolve();
  private oom = false;

  constructor(private readonly s: ExecStart) {
    this.stdin = s.outer.stdin;
    this.stdout = s.outer.stdout;
    this.stderr = s.outer.stderr;
    this.exited = s.outer.exited.then((runtimeExit) => this.finish(runtimeExit));
    if (s.outer.resize) {
      this.resize = resizer(s.outer, s.cli.flavor.relaysResize, () => this.readPgid());
    }
  }

  get pid(): number | undefined {
    return this.s.outer.pid;
  }

  get startError(): string | undefined {
    return this.s.outer.startError;
  }

  get oomKilled(): boolean {
    return this.oom;
  }

  signalGroup(sig: NodeJS.Signals | number): void {
    if (this.readPgid() !== undefined) {
      this.deliver(sig);
      return;
    }
    if (this.done) return;
    // The runtime has not started the process yet: deliver once it has.
    this.pending.push(sig);
    this.poll ??= setTimeout(() => this.flush(), POLL_PID_MS);
  }

  private readPgid(): number | undefined {
    if (this.pgid !== undefined) return this.pgid;
    try {
      const n = Number.parseInt(readFileSync(this.s.files.pid, "utf8"), 10);
      if (n > 1) this.pgid = n;
    } catch {
      // not written yet
    }
    return this.pgid;
  }

  private flush(): void {
    this.poll = undefined;
    if (this.readPgid() !== undefined) {
      for (const sig of this.pending.splice(0)) this.deliver(sig);
    } else if (!this.done) this.poll = setTimeout(() => this.flush(), POLL_PID_MS);
  }

  /** Sends `sig` to the group (its id known). */
  private deliver(sig: NodeJS.Signals | number): void {
    const pgid = this.pgid as number;
    if (this.s.cli.flavor.killsInTask) {
      this.killInTask(sig, pgid);
      return;
    }
    try {
      process.kill(-pgid, sig);
    } catch {
      // ESRCH: the group is gone, or not made yet: crun's exec leaves the
      // process in crun's group until the wrapper's first statement makes its
      // own, and the wrapper has forked nothing before that.
      if (this.done) return;
      try {
        process.kill(pgid, sig);
      } catch {
        // gone
      }
    }
  }

  /** The task's processes are not the host's to signal: the kill runs in the task. */
  private killInTask(sig: NodeJS.Signals | number, pgid: number): void {
    const n = typeof sig === "number" ? sig : constants.signals[sig];
    if (n === undefined) return; // not a signal of this system
    const kill = this.s.cli.command(["exec", this.s.containerId, ...killArgv(n, pgid)]);
    this.killing = this.killing.then(() => runTool(kill.file, kill.args).catch(() => undefined));
  }

  /** The exec's status once the runtime's exec process ended with `runtimeExit`. */
  private finish(runtimeExit: ExitStatus): ExitStatus {
    const s = this.s;
    this.done = true;
    clearTimeout(this.poll);
    // Sync reads of two tiny files: an async read costs several event-loop turns (~2 ms).
    const report = parseWrapperStatus(
      s.pipedReport() ??
        (s.statusFd === undefined ? readSmall(s.files.status) : readOwn(s.statusFd)),
    );
    if (s.statusFd !== undefined) closeSync(s.statusFd);
    // The cgroup's OOM count is read only when it can matter (a SIGKILL, or no report).
    const oomGrew = () => s.oomBefore !== undefined && (s.oomKills() ?? 0) > s.oomBefore;
    // No report and an OOM kill in a task whose sandbox an OOM kill ends: the
    // runtime's exit code says nothing about the exec.
    const status: ExitStatus =
      report ??
      (s.cli.flavor.oomEndsSandbox && oomGrew()
        ? { signal: SIGKILL }
        : statusWithoutReport(runtimeExit));
    // Before the pid file goes: a late signal still finds the group.
    this.readPgid();
    this.oom = status.signal === SIGKILL && oomGrew();
    // Off the exit path: nothing reads these files again (a pipe exec with its report
    // on fd 3 has no status file, only a console-socket PTY exec a socket).
    const made = [s.files.process, s.files.pid];
    if (s.pty || s.statusInTask) made.push(s.files.status);
    if (s.pty && s.cli.flavor.consoleSocketPty) made.push(s.files.socket);
    for (const f of made) void rm(f, { force: true }).catch(() => undefined);
    return status;
  }
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
