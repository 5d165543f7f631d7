import { create } from "@bufbuild/protobuf";
import { UnimplementedError } from "../../errors.ts";
import {
  type TaskSnapshotFilesystemRequest,
  type TaskSnapshotFilesystemResponse,
  TaskSnapshotFilesystemResponseSchema,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import type { ImageService } from "../../images/service.ts";
import { timeImageOp } from "../../metrics/metrics.ts";
import { type ServerDeps, unary } from "../transport/call.ts";

/** TaskSnapshotFilesystem: captures the task's whole root filesystem as a new image. */
export function taskSnapshotFilesystem(deps: ServerDeps, images?: ImageService) {
  return unary<TaskSnapshotFilesystemRequest, TaskSnapshotFilesystemResponse>(
    deps,
    "TaskSnapshotFilesystem",
    async (req, ctx) => {
      if (!images) throw new UnimplementedError("this router serves no images");
      const imageId = await timeImageOp(deps.metrics, "snapshot_filesystem", () =>
        images.snapshotFilesystem(req.taskId, {
          snapshotId: req.snapshotId,
          ttlSeconds: req.ttlSeconds,
          containerId: req.containerId,
          encryptionKey: req.customerSuppliedEncryptionKey,
          signal: ctx.signal,
        }),
      );
      return create(TaskSnapshotFilesystemResponseSchema, { imageId });
    },
  );
}
