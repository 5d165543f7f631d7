import { create } from "@bufbuild/protobuf";
import { UnimplementedError } from "../../errors.ts";
import {
  type TaskSnapshotDirectoryRequest,
  type TaskSnapshotDirectoryResponse,
  TaskSnapshotDirectoryResponseSchema,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import type { ImageService } from "../../images/service.ts";
import { timeImageOp } from "../../metrics/metrics.ts";
import { type ServerDeps, unary } from "../transport/call.ts";

/** TaskSnapshotDirectory: captures the directory at `path` as a new image. */
export function taskSnapshotDirectory(deps: ServerDeps, images?: ImageService) {
  return unary<TaskSnapshotDirectoryRequest, TaskSnapshotDirectoryResponse>(
    deps,
    "TaskSnapshotDirectory",
    async (req, ctx) => {
      if (!images) throw new UnimplementedError("this router serves no images");
      const imageId = await timeImageOp(deps.metrics, "snapshot_directory", () =>
        images.snapshotDirectory(req.taskId, req.path, {
          snapshotId: req.snapshotId,
          ttlSeconds: req.ttlSeconds,
          containerId: req.containerId,
          encryptionKey: req.customerSuppliedEncryptionKey,
          signal: ctx.signal,
        }),
      );
      return create(TaskSnapshotDirectoryResponseSchema, { imageId });
    },
  );
}
