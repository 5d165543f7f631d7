import { create } from "@bufbuild/protobuf";
import { type Empty, EmptySchema } from "@bufbuild/protobuf/wkt";
import { UnimplementedError } from "../../errors.ts";
import type { TaskMountDirectoryRequest } from "../../gen/modal_proto/task_command_router_pb.ts";
import type { ImageService } from "../../images/service.ts";
import { timeImageOp } from "../../metrics/metrics.ts";
import { type ServerDeps, unary } from "../transport/call.ts";

/** TaskMountDirectory: mounts `image_id` ("" = an empty directory) at `path` in the task. */
export function taskMountDirectory(deps: ServerDeps, images?: ImageService) {
  return unary<TaskMountDirectoryRequest, Empty>(deps, "TaskMountDirectory", async (req) => {
    if (!images) throw new UnimplementedError("this router serves no images");
    await timeImageOp(deps.metrics, "mount", () =>
      images.mountDirectory(req.taskId, req.path, req.imageId, {
        containerId: req.containerId,
        encryptionKey: req.customerSuppliedEncryptionKey,
      }),
    );
    return create(EmptySchema);
  });
}
