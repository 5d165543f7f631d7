import { create } from "@bufbuild/protobuf";
import {
  type ListExecsRequest,
  type ListExecsResponse,
  ListExecsResponseSchema,
} from "../../gen/taskrouter/v1/execs_pb.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { type ServerDeps, unary } from "../transport/call.ts";
import { toExecInfoMsg } from "./execs-info.ts";

export function execsList(deps: ServerDeps, tasks: TaskManager) {
  return unary<ListExecsRequest, ListExecsResponse>(deps, "ListExecs", async (req) =>
    create(ListExecsResponseSchema, { execs: tasks.listExecs(req.taskId).map(toExecInfoMsg) }),
  );
}
