import { create } from "@bufbuild/protobuf";
import {
  type InspectExecRequest,
  type InspectExecResponse,
  InspectExecResponseSchema,
} from "../../gen/taskrouter/v1/execs_pb.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { type ServerDeps, unary } from "../transport/call.ts";
import { toExecInfoMsg } from "./execs-info.ts";

export function execsInspect(deps: ServerDeps, tasks: TaskManager) {
  return unary<InspectExecRequest, InspectExecResponse>(deps, "InspectExec", async (req) =>
    create(InspectExecResponseSchema, {
      exec: toExecInfoMsg(tasks.inspectExec(req.taskId, req.execId)),
    }),
  );
}
