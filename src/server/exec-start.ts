import { create } from "@bufbuild/protobuf";
import { InvalidArgumentError } from "../errors.ts";
import type { ExecRequest } from "../exec/exec-request.ts";
import {
  type TaskExecStartRequest,
  type TaskExecStartResponse,
  TaskExecStartResponseSchema,
  TaskExecStderrConfig,
  TaskExecStdoutConfig,
} from "../gen/modal_proto/task_command_router_pb.ts";
import type { TaskManager } from "../tasks/task-manager.ts";
import { type ServerDeps, unary } from "./call.ts";

/** Maps the wire request to the domain's ExecRequest (enums checked here). */
export function toExecRequest(req: TaskExecStartRequest): ExecRequest {
  const stdout =
    req.stdoutConfig === TaskExecStdoutConfig.PIPE
      ? "pipe"
      : req.stdoutConfig === TaskExecStdoutConfig.DEVNULL
        ? "devnull"
        : undefined;
  const stderr =
    req.stderrConfig === TaskExecStderrConfig.PIPE
      ? "pipe"
      : req.stderrConfig === TaskExecStderrConfig.DEVNULL
        ? "devnull"
        : req.stderrConfig === TaskExecStderrConfig.STDOUT
          ? "stdout"
          : undefined;
  if (!stdout) throw new InvalidArgumentError(`unknown stdout_config ${req.stdoutConfig}`);
  if (!stderr) throw new InvalidArgumentError(`unknown stderr_config ${req.stderrConfig}`);
  const p = req.ptyInfo;
  return {
    execId: req.execId,
    argv: req.commandArgs,
    stdout,
    stderr,
    timeoutSecs: req.timeoutSecs || undefined,
    workdir: req.workdir,
    secretIds: req.secretIds,
    pty: p?.enabled
      ? {
          rows: p.winszRows || 24,
          cols: p.winszCols || 80,
          term: p.envTerm,
          colorterm: p.envColorterm,
          termProgram: p.envTermProgram,
          noTerminateOnIdleStdin: p.noTerminateOnIdleStdin,
        }
      : undefined,
    runtimeDebug: req.runtimeDebug,
  };
}

export function taskExecStart(deps: ServerDeps, tasks: TaskManager) {
  return unary<TaskExecStartRequest, TaskExecStartResponse>(deps, "TaskExecStart", async (req) => {
    await tasks.startExec(req.taskId, toExecRequest(req));
    return create(TaskExecStartResponseSchema);
  });
}
