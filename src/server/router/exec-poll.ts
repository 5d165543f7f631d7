import { create } from "@bufbuild/protobuf";
import {
  type TaskExecPollRequest,
  type TaskExecPollResponse,
  TaskExecPollResponseSchema,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { type ServerDeps, unary } from "../transport/call.ts";
import { exitStatusOneof } from "./exit-status.ts";

export function taskExecPoll(deps: ServerDeps, tasks: TaskManager) {
  return unary<TaskExecPollRequest, TaskExecPollResponse>(deps, "TaskExecPoll", async (req) =>
    create(TaskExecPollResponseSchema, {
      exitStatus: exitStatusOneof(tasks.poll(req.taskId, req.execId)),
    }),
  );
}
