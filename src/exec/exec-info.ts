import type { ExitStatus } from "../runtime/runtime.ts";
import type { Exec, TerminationCause } from "./exec.ts";

/** What `InspectExec`/`ListExecs` tell about one exec (never its environment). */
export interface ExecInfo {
  execId: string;
  argv: string[];
  state: "running" | "exited";
  /** ms since the epoch. */
  startedAt: number;
  endedAt: number | undefined;
  status: ExitStatus | undefined;
  cause: TerminationCause | undefined;
  stdoutBytes: number;
  stderrBytes: number;
  stdinBytes: number;
  /** The leader's pid; undefined when the program could not be started. */
  pid: number | undefined;
  /** The terminal's current size for a PTY exec. */
  pty: { rows: number; cols: number } | undefined;
  workdir: string | undefined;
  timeoutSecs: number | undefined;
  /** The sidecar container it runs in ("": the task's main container). */
  containerId: string;
}

export function describeExec(e: Exec): ExecInfo {
  return {
    execId: e.id,
    argv: e.request.argv,
    state: e.running ? "running" : "exited",
    startedAt: e.startedAt,
    endedAt: e.endedAt,
    status: e.status,
    cause: e.cause,
    stdoutBytes: e.bytes("stdout"),
    stderrBytes: e.bytes("stderr"),
    stdinBytes: e.stdin.offset,
    pid: e.pid,
    pty: e.ptySize ? { ...e.ptySize } : undefined,
    workdir: e.request.workdir,
    timeoutSecs: e.request.timeoutSecs,
    containerId: e.request.containerId,
  };
}
