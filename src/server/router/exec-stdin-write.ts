import { create } from "@bufbuild/protobuf";
import {
  type TaskExecStdinWriteRequest,
  type TaskExecStdinWriteResponse,
  TaskExecStdinWriteResponseSchema,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { type ServerDeps, unary, wireOffset } from "../transport/call.ts";

export function taskExecStdinWrite(deps: ServerDeps, tasks: TaskManager) {
  return unary<TaskExecStdinWriteRequest, TaskExecStdinWriteResponse>(
    deps,
    "TaskExecStdinWrite",
    async (req, { signal }) => {
      // No stdin reaches 2^53 bytes, so a larger offset is simply a gap (OUT_OF_RANGE).
      const offset = wireOffset(req.offset);
      // A cancelled call stops waiting for the pipe; its bytes stay accepted (see StdinStream).
      await tasks.writeStdin(req.taskId, req.execId, offset, req.data, req.eof, signal);
      return create(TaskExecStdinWriteResponseSchema);
    },
  );
}
