import { create } from "@bufbuild/protobuf";
import { type Empty, EmptySchema } from "@bufbuild/protobuf/wkt";
import { UnimplementedError } from "../../errors.ts";
import type { TaskUnmountDirectoryRequest } from "../../gen/modal_proto/task_command_router_pb.ts";
import type { ImageService } from "../../images/service.ts";
import { timeImageOp } from "../../metrics/metrics.ts";
import { type ServerDeps, unary } from "../transport/call.ts";

/** TaskUnmountDirectory: removes the mount at `path`; what it hid reappears. */
export function taskUnmountDirectory(deps: ServerDeps, images?: ImageService) {
  return unary<TaskUnmountDirectoryRequest, Empty>(deps, "TaskUnmountDirectory", async (req) => {
    if (!images) throw new UnimplementedError("this router serves no images");
    await timeImageOp(deps.metrics, "unmount", () =>
      images.unmountDirectory(req.taskId, req.path, { containerId: req.containerId }),
    );
    return create(EmptySchema);
  });
}
