import { create } from "@bufbuild/protobuf";
import {
  type TaskContainerTerminateRequest,
  type TaskContainerTerminateResponse,
  TaskContainerTerminateResponseSchema,
  type TaskContainerWaitRequest,
  type TaskContainerWaitResponse,
  TaskContainerWaitResponseSchema,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { type ServerDeps, unary } from "../transport/call.ts";
import { toGenericResult } from "./container-info.ts";

/** TaskContainerTerminate: ends a sidecar (OK when it has ended already). */
export function taskContainerTerminate(deps: ServerDeps, tasks: TaskManager) {
  return unary<TaskContainerTerminateRequest, TaskContainerTerminateResponse>(
    deps,
    "TaskContainerTerminate",
    async (req) => {
      await tasks.get(req.taskId).containers.terminate(req.containerId);
      return create(TaskContainerTerminateResponseSchema);
    },
  );
}

/** TaskContainerWait: the sidecar's result within `timeout` seconds (0: now); unset while it runs. */
export function taskContainerWait(deps: ServerDeps, tasks: TaskManager) {
  return unary<TaskContainerWaitRequest, TaskContainerWaitResponse>(
    deps,
    "TaskContainerWait",
    async (req, { signal }) => {
      const containers = tasks.get(req.taskId).containers;
      const r = await containers.wait(req.containerId, req.timeout * 1000, signal);
      return create(TaskContainerWaitResponseSchema, r ? { result: toGenericResult(r) } : {});
    },
  );
}
