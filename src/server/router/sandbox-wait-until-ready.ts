import { create } from "@bufbuild/protobuf";
import {
  type SandboxWaitUntilReadyTcrRequest,
  type SandboxWaitUntilReadyTcrResponse,
  SandboxWaitUntilReadyTcrResponseSchema,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import { waitUntilReady } from "../../tasks/readiness.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { type ServerDeps, unary } from "../transport/call.ts";

/**
 * Holds the call until the task's readiness probe first succeeded (§5.6):
 * `ready_at` in Unix epoch seconds; DEADLINE_EXCEEDED after `timeout`
 * seconds; FAILED_PRECONDITION for a task without a probe.
 */
export function sandboxWaitUntilReady(deps: ServerDeps, tasks: TaskManager) {
  return unary<SandboxWaitUntilReadyTcrRequest, SandboxWaitUntilReadyTcrResponse>(
    deps,
    "SandboxWaitUntilReady",
    async (req, { signal }) => {
      const readyAt = await waitUntilReady(tasks.get(req.taskId), req.timeout * 1000, signal);
      return create(SandboxWaitUntilReadyTcrResponseSchema, { readyAt: readyAt / 1000 });
    },
  );
}
