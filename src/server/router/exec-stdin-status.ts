import { create } from "@bufbuild/protobuf";
import {
  type TaskExecStdinStatusRequest,
  type TaskExecStdinStatusResponse,
  TaskExecStdinStatusResponseSchema,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { type ServerDeps, unary } from "../transport/call.ts";

/** TaskExecStdinStatus: stdin progress; evicts the exec's stdin stream in flight. */
export function taskExecStdinStatus(deps: ServerDeps, tasks: TaskManager) {
  return unary<TaskExecStdinStatusRequest, TaskExecStdinStatusResponse>(
    deps,
    "TaskExecStdinStatus",
    async (req) => {
      const p = tasks.stdinStatus(req.taskId, req.execId);
      return create(TaskExecStdinStatusResponseSchema, {
        numBytesWritten: BigInt(p.written),
        closed: p.closed,
      });
    },
  );
}
