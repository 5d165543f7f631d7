import { create } from "@bufbuild/protobuf";
import { InvalidArgumentError } from "../../errors.ts";
import {
  TaskExecStdioFileDescriptor,
  type TaskExecStdioReadRequest,
  type TaskExecStdioReadResponse,
  TaskExecStdioReadResponseSchema,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import { serializer } from "../../rpc/service-def.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { type ServerDeps, serverStream, wireOffset } from "../transport/call.ts";
import { chunkFraming } from "../transport/raw-frames.ts";

export function taskExecStdioRead(deps: ServerDeps, tasks: TaskManager) {
  return serverStream<TaskExecStdioReadRequest, TaskExecStdioReadResponse>(
    deps,
    "TaskExecStdioRead",
    async function* (req, { signal }) {
      const fd = req.fileDescriptor;
      const stream =
        fd === TaskExecStdioFileDescriptor.STDOUT
          ? "stdout"
          : fd === TaskExecStdioFileDescriptor.STDERR
            ? "stderr"
            : undefined;
      if (!stream) throw new InvalidArgumentError(`unknown file_descriptor ${fd}`);
      // No stream reaches 2^53 bytes, so a larger offset is simply past the end (OUT_OF_RANGE).
      const offset = wireOffset(req.offset);
      const chunks = tasks.read(req.taskId, req.execId, stream, offset, signal);
      for await (const data of chunks) yield create(TaskExecStdioReadResponseSchema, { data });
    },
    RAW,
  );
}

/** Output chunks leave as frames built in their own headroom; their buffers go back to the reader's pool. */
const RAW = chunkFraming<TaskExecStdioReadResponse>(serializer(TaskExecStdioReadResponseSchema));
