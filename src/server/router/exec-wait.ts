import { create } from "@bufbuild/protobuf";
import {
  type TaskExecWaitRequest,
  type TaskExecWaitResponse,
  TaskExecWaitResponseSchema,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { type ServerDeps, unary } from "../transport/call.ts";
import { exitStatusOneof } from "./exit-status.ts";

/** Holds the call until the exec exits; a cancelled call just stops waiting. */
export function taskExecWait(deps: ServerDeps, tasks: TaskManager) {
  return unary<TaskExecWaitRequest, TaskExecWaitResponse>(
    deps,
    "TaskExecWait",
    async (req, { signal }) =>
      create(TaskExecWaitResponseSchema, {
        exitStatus: exitStatusOneof(await tasks.wait(req.taskId, req.execId, signal)),
      }),
  );
}
