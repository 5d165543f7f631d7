import { create } from "@bufbuild/protobuf";
import {
  type TaskContainerGetRequest,
  type TaskContainerGetResponse,
  TaskContainerGetResponseSchema,
  type TaskContainerListRequest,
  type TaskContainerListResponse,
  TaskContainerListResponseSchema,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { type ServerDeps, unary } from "../transport/call.ts";
import { toContainerInfoMsg } from "./container-info.ts";

/** TaskContainerGet: the newest container with a name (ended ones with include_terminated). */
export function taskContainerGet(deps: ServerDeps, tasks: TaskManager) {
  return unary<TaskContainerGetRequest, TaskContainerGetResponse>(
    deps,
    "TaskContainerGet",
    async (req) => {
      const c = tasks.get(req.taskId).containers.get(req.containerName, req.includeTerminated);
      return create(TaskContainerGetResponseSchema, { container: toContainerInfoMsg(c) });
    },
  );
}

/** TaskContainerList: "main" first, then the sidecars (ended ones with include_terminated). */
export function taskContainerList(deps: ServerDeps, tasks: TaskManager) {
  return unary<TaskContainerListRequest, TaskContainerListResponse>(
    deps,
    "TaskContainerList",
    async (req) => {
      const all = tasks.get(req.taskId).containers.list(req.includeTerminated);
      return create(TaskContainerListResponseSchema, { containers: all.map(toContainerInfoMsg) });
    },
  );
}
