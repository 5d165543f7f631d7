import { create } from "@bufbuild/protobuf";
import type { TerminationCause as DomainCause } from "../../exec/exec.ts";
import type { ExecInfo } from "../../exec/exec-info.ts";
import {
  type ExecInfo as ExecInfoMsg,
  ExecInfoSchema,
  ExecState,
  TerminationCause,
} from "../../gen/taskrouter/v1/execs_pb.ts";
import { exitStatusOneof } from "../router/exit-status.ts";

const CAUSES: Record<DomainCause, TerminationCause> = {
  exited: TerminationCause.EXITED,
  signaled: TerminationCause.SIGNALED,
  timeout: TerminationCause.TIMEOUT,
  killed: TerminationCause.KILLED,
  task_terminated: TerminationCause.TASK_TERMINATED,
  oom: TerminationCause.OOM,
};

/** Domain ExecInfo → the wire message. */
export function toExecInfoMsg(e: ExecInfo): ExecInfoMsg {
  return create(ExecInfoSchema, {
    execId: e.execId,
    commandArgs: e.argv,
    state: e.state === "running" ? ExecState.RUNNING : ExecState.EXITED,
    startedAtMs: BigInt(e.startedAt),
    endedAtMs: BigInt(e.endedAt ?? 0),
    exitStatus: exitStatusOneof(e.status),
    cause: e.cause ? CAUSES[e.cause] : TerminationCause.UNSPECIFIED,
    stdoutBytes: BigInt(e.stdoutBytes),
    stderrBytes: BigInt(e.stderrBytes),
    stdinBytes: BigInt(e.stdinBytes),
    pid: e.pid ?? 0,
    pty: e.pty !== undefined,
    ptyRows: e.pty?.rows ?? 0,
    ptyCols: e.pty?.cols ?? 0,
    workdir: e.workdir ?? "",
    timeoutSecs: e.timeoutSecs ?? 0,
    containerId: e.containerId,
  });
}
