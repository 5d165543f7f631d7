import { create } from "@bufbuild/protobuf";
import { InvalidArgumentError } from "../errors.ts";
import {
  type TaskExecStdinWriteRequest,
  type TaskExecStdinWriteResponse,
  TaskExecStdinWriteResponseSchema,
} from "../gen/modal_proto/task_command_router_pb.ts";
import type { TaskManager } from "../tasks/task-manager.ts";
import { type ServerDeps, unary } from "./call.ts";

export function taskExecStdinWrite(deps: ServerDeps, tasks: TaskManager) {
  return unary<TaskExecStdinWriteRequest, TaskExecStdinWriteResponse>(
    deps,
    "TaskExecStdinWrite",
    async (req) => {
      if (req.offset > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new InvalidArgumentError(`offset ${req.offset} is too large`);
      }
      await tasks.writeStdin(req.taskId, req.execId, Number(req.offset), req.data, req.eof);
      return create(TaskExecStdinWriteResponseSchema);
    },
  );
}
