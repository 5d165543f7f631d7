import { create } from "@bufbuild/protobuf";
import { PTYInfoSchema } from "../gen/modal_proto/api_pb.ts";
import {
  type TaskExecStartRequest,
  TaskExecStartRequestSchema,
  TaskExecStderrConfig,
  TaskExecStdoutConfig,
} from "../gen/modal_proto/task_command_router_pb.ts";
import type { ExitStatus } from "../runtime/runtime.ts";
import type { StartOptions } from "./options.ts";

/**
 * The TaskExecStart request for `argv` in `taskId` under `execId`: every
 * option in `opts` becomes its field (stdio configs, timeout, workdir,
 * secrets, env, the PTY's size and terminal names); an option left out
 * leaves its field unset, so the router's default applies.
 */
export function startRequest(
  taskId: string,
  execId: string,
  argv: string[],
  opts: StartOptions,
): TaskExecStartRequest {
  return create(TaskExecStartRequestSchema, {
    taskId,
    execId,
    commandArgs: argv,
    stdoutConfig: opts.stdout === "pipe" ? TaskExecStdoutConfig.PIPE : TaskExecStdoutConfig.DEVNULL,
    stderrConfig:
      opts.stderr === "pipe"
        ? TaskExecStderrConfig.PIPE
        : opts.stderr === "stdout"
          ? TaskExecStderrConfig.STDOUT
          : TaskExecStderrConfig.DEVNULL,
    ...(opts.timeoutSecs ? { timeoutSecs: opts.timeoutSecs } : {}),
    ...(opts.workdir !== undefined ? { workdir: opts.workdir } : {}),
    ...(opts.secretIds ? { secretIds: opts.secretIds } : {}),
    ...(opts.env ? { env: opts.env } : {}),
    ...(opts.pty
      ? {
          ptyInfo: create(PTYInfoSchema, {
            enabled: true,
            winszRows: opts.pty.rows,
            winszCols: opts.pty.cols,
            envTerm: opts.pty.term ?? "",
            envColorterm: opts.pty.colorterm ?? "",
            envTermProgram: opts.pty.termProgram ?? "",
            noTerminateOnIdleStdin: opts.pty.noTerminateOnIdleStdin ?? false,
          }),
        }
      : {}),
  });
}

/** The exit status in a Poll or Wait response's oneof, or undefined while the command runs. */
export function toExit(s: { case?: string; value?: number }): ExitStatus | undefined {
  if (s.case === "code") return { code: s.value ?? 0 };
  if (s.case === "signal") return { signal: s.value ?? 0 };
  return undefined;
}
