import { UnimplementedError } from "../errors.ts";
import type {
  TaskSnapshotDirectoryRequest,
  TaskSnapshotDirectoryResponse,
} from "../gen/modal_proto/task_command_router_pb.ts";
import { type ServerDeps, unary } from "./call.ts";

/** Images are not served yet (see the images issue): UNIMPLEMENTED. */
export function taskSnapshotDirectory(deps: ServerDeps) {
  return unary<TaskSnapshotDirectoryRequest, TaskSnapshotDirectoryResponse>(
    deps,
    "TaskSnapshotDirectory",
    async () => {
      throw new UnimplementedError("TaskSnapshotDirectory is not supported yet");
    },
  );
}
