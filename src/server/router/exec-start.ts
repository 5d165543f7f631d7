import { create } from "@bufbuild/protobuf";
import { InvalidArgumentError } from "../../errors.ts";
import type { EnvSource, ExecRequest } from "../../exec/exec-request.ts";
import { type PTYInfo, PTYInfo_PTYType as PtyType } from "../../gen/modal_proto/api_pb.ts";
import {
  type TaskExecStartRequest,
  type TaskExecStartResponse,
  TaskExecStartResponseSchema,
  TaskExecStderrConfig,
  TaskExecStdoutConfig,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { type ServerDeps, unary } from "../transport/call.ts";

const PTY_TYPES = {
  [PtyType.PTY_TYPE_UNSPECIFIED]: "unspecified",
  [PtyType.PTY_TYPE_FUNCTION]: "function",
  [PtyType.PTY_TYPE_SHELL]: "shell",
} as const;

/** `pty_info.pty_type` (of an exec or a sidecar); a value outside the enum is InvalidArgument. */
export function ptyType(p: PTYInfo): (typeof PTY_TYPES)[PtyType] {
  const type = PTY_TYPES[p.ptyType];
  if (!type) throw new InvalidArgumentError(`unknown pty_info.pty_type ${p.ptyType}`);
  return type;
}

/** The terminal `pty_info` asks for (of an exec or a sidecar): sizes of 0 mean 24x80. */
export function ptyFields(p: PTYInfo) {
  return {
    rows: p.winszRows || 24,
    cols: p.winszCols || 80,
    term: p.envTerm,
    colorterm: p.envColorterm,
    termProgram: p.envTermProgram,
    noTerminateOnIdleStdin: p.noTerminateOnIdleStdin,
  };
}

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
  // An exec runs its command on the terminal whatever the type; an unknown one is still refused.
  if (p?.enabled) ptyType(p);
  return {
    execId: req.execId,
    argv: req.commandArgs,
    stdout,
    stderr,
    timeoutSecs: req.timeoutSecs || undefined,
    workdir: req.workdir,
    envSources: envSources(req),
    containerId: req.containerId,
    pty: p?.enabled ? ptyFields(p) : undefined,
    runtimeDebug: req.runtimeDebug,
  };
}

/**
 * The env carriers of the request as one ordered list (PROTOCOL-LATER §6):
 * `secret_sources` as sent, or else `secret_ids` in order and then `env` on
 * top. Mixing `secret_sources` with the others, a source with neither
 * field, or an empty secret id is InvalidArgument (naming the field sent). TaskContainerCreate carries the same three fields.
 */
export function envSources(
  req: Pick<TaskExecStartRequest, "env" | "secretIds" | "secretSources">,
): EnvSource[] {
  const env = Object.entries(req.env);
  if (req.secretSources.length > 0) {
    if (req.secretIds.length > 0 || env.length > 0) {
      throw new InvalidArgumentError("secret_sources cannot be combined with secret_ids or env");
    }
    return req.secretSources.map((s, i): EnvSource => {
      if (s.source.case === "secretId") {
        if (s.source.value === "") {
          throw new InvalidArgumentError(`secret_sources[${i}].secret_id must not be empty`);
        }
        return { secretId: s.source.value };
      }
      if (s.source.case === "env") return { env: s.source.value.contents };
      throw new InvalidArgumentError(`secret_sources[${i}] sets neither secret_id nor env`);
    });
  }
  const out: EnvSource[] = req.secretIds.map((id, i) => {
    if (id === "") throw new InvalidArgumentError(`secret_ids[${i}] must not be empty`);
    return { secretId: id };
  });
  if (env.length > 0) out.push({ env: req.env });
  return out;
}

export function taskExecStart(deps: ServerDeps, tasks: TaskManager) {
  return unary<TaskExecStartRequest, TaskExecStartResponse>(
    deps,
    "TaskExecStart",
    async (req, ctx) => {
      // ctx.caller: the secrets the token may use beyond the task's own grants.
      await tasks.startExec(req.taskId, toExecRequest(req), ctx.caller);
      return create(TaskExecStartResponseSchema);
    },
  );
}
