import { create } from "@bufbuild/protobuf";
import {
  type ResizeExecRequest,
  type ResizeExecResponse,
  ResizeExecResponseSchema,
} from "../../gen/taskrouter/v1/execs_pb.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { type ServerDeps, unary } from "../transport/call.ts";

export function execsResize(deps: ServerDeps, tasks: TaskManager) {
  return unary<ResizeExecRequest, ResizeExecResponse>(deps, "ResizeExec", async (req) => {
    tasks.resizeExec(req.taskId, req.execId, req.rows, req.cols);
    return create(ResizeExecResponseSchema);
  });
}
