import type { Empty } from "@bufbuild/protobuf/wkt";
import { UnimplementedError } from "../errors.ts";
import type { TaskMountDirectoryRequest } from "../gen/modal_proto/task_command_router_pb.ts";
import { type ServerDeps, unary } from "./call.ts";

/** Images are not served yet (see the images issue): UNIMPLEMENTED. */
export function taskMountDirectory(deps: ServerDeps) {
  return unary<TaskMountDirectoryRequest, Empty>(deps, "TaskMountDirectory", async () => {
    throw new UnimplementedError("TaskMountDirectory is not supported yet");
  });
}
