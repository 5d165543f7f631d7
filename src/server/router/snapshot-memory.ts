import { create } from "@bufbuild/protobuf";
import { UnimplementedError } from "../../errors.ts";
import {
  type TaskSnapshotMemoryRequest,
  type TaskSnapshotMemoryResponse,
  TaskSnapshotMemoryResponseSchema,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import type { MemorySnapshots } from "../../snapshots/memory-snapshots.ts";
import { type ServerDeps, unary } from "../transport/call.ts";

/**
 * TaskSnapshotMemory: checkpoints the task into a memory snapshot, once per
 * idempotency_key, and ends it. The call's cancellation does not stop it
 * (PROTOCOL-LATER §5.7: the operation may finish after the caller gave up).
 */
export function taskSnapshotMemory(deps: ServerDeps, snapshots?: MemorySnapshots) {
  return unary<TaskSnapshotMemoryRequest, TaskSnapshotMemoryResponse>(
    deps,
    "TaskSnapshotMemory",
    async (req) => {
      if (!snapshots) throw new UnimplementedError("this router serves no memory snapshots");
      const snapshotId = await snapshots.snapshot(req.taskId, req.idempotencyKey);
      return create(TaskSnapshotMemoryResponseSchema, { snapshotId });
    },
  );
}
