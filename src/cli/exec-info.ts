import { type ExecInfo, ExecState, TerminationCause } from "../gen/taskrouter/v1/execs_pb.ts";

const CAUSES: Record<TerminationCause, string | undefined> = {
  [TerminationCause.UNSPECIFIED]: undefined,
  [TerminationCause.EXITED]: "exited",
  [TerminationCause.SIGNALED]: "signaled",
  [TerminationCause.TIMEOUT]: "timeout",
  [TerminationCause.KILLED]: "killed",
  [TerminationCause.TASK_TERMINATED]: "task_terminated",
  [TerminationCause.OOM]: "oom",
};

/** An exec's description as plain JSON (what `exec inspect` prints). */
export function execInfoJson(e: ExecInfo): Record<string, unknown> {
  const ended = Number(e.endedAtMs);
  return {
    execId: e.execId,
    argv: e.commandArgs,
    state: e.state === ExecState.RUNNING ? "running" : "exited",
    pid: e.pid || null,
    pty: e.pty ? { rows: e.ptyRows, cols: e.ptyCols } : null,
    startedAt: new Date(Number(e.startedAtMs)).toISOString(),
    endedAt: ended ? new Date(ended).toISOString() : null,
    exitCode: e.exitStatus.case === "code" ? e.exitStatus.value : null,
    exitSignal: e.exitStatus.case === "signal" ? e.exitStatus.value : null,
    cause: CAUSES[e.cause] ?? null,
    stdoutBytes: Number(e.stdoutBytes),
    stderrBytes: Number(e.stderrBytes),
    stdinBytes: Number(e.stdinBytes),
    workdir: e.workdir || null,
    timeoutSecs: e.timeoutSecs || null,
    containerId: e.containerId || null,
  };
}

/** "0", "signal 9", or "-" while running. */
export function exitText(e: ExecInfo): string {
  if (e.exitStatus.case === "code") return String(e.exitStatus.value);
  if (e.exitStatus.case === "signal") return `signal ${e.exitStatus.value}`;
  return "-";
}

export function causeText(e: ExecInfo): string {
  return CAUSES[e.cause] ?? "-";
}
