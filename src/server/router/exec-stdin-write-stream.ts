import { create } from "@bufbuild/protobuf";
import { InvalidArgumentError } from "../../errors.ts";
import {
  type TaskExecStdinWriteStreamRequest,
  type TaskExecStdinWriteStreamResponse,
  TaskExecStdinWriteStreamResponseSchema,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { clientStream, type ServerDeps, wireOffset } from "../transport/call.ts";

/**
 * TaskExecStdinWriteStream: `start`, then `data` chunks, then `end` (EOF).
 * The next message is pulled once the session can take it (backpressure: a
 * bounded window of chunks on their way to the command, StdinSession.write);
 * the answer is OK only once `end` closed stdin after every chunk. A stream that breaks
 * before `end` leaves stdin open with what it applied (PROTOCOL-LATER §5.4).
 */
export function taskExecStdinWriteStream(deps: ServerDeps, tasks: TaskManager) {
  return clientStream<TaskExecStdinWriteStreamRequest, TaskExecStdinWriteStreamResponse>(
    deps,
    "TaskExecStdinWriteStream",
    async (reqs, signal) => {
      let session: ReturnType<TaskManager["openStdinSession"]> | undefined;
      for await (const req of reqs) {
        const p = req.payload;
        if (!session) {
          if (p.case !== "start") {
            throw new InvalidArgumentError("the first message of the stream must be `start`");
          }
          const s = p.value;
          session = tasks.openStdinSession(s.taskId, s.execId, wireOffset(s.offset));
          continue;
        }
        if (signal.aborted) throw signal.reason;
        // A cancelled call stops waiting for the pipe (what it applied stays applied).
        if (p.case === "data") await session.write(p.value, signal);
        else if (p.case === "end") {
          await session.end(signal);
          return create(TaskExecStdinWriteStreamResponseSchema);
        } else if (p.case === "start") {
          throw new InvalidArgumentError("`start` may only be the first message of the stream");
        } else throw new InvalidArgumentError("a stream message without a payload");
      }
      throw new InvalidArgumentError(
        session ? "the stream ended without `end`" : "the stream had no `start` message",
      );
    },
  );
}
