import { create } from "@bufbuild/protobuf";
import { UnimplementedError } from "../../errors.ts";
import {
  type TaskReloadVolumesRequest,
  type TaskReloadVolumesResponse,
  TaskReloadVolumesResponseSchema,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { reloadTaskVolumes } from "../../volumes/task-volumes.ts";
import type { VolumeStore } from "../../volumes/volume-store.ts";
import { type ServerDeps, unary } from "../transport/call.ts";

/**
 * TaskReloadVolumes (§3.5, §5.7): every volume mount of the task's container
 * (`container_id` "" = main) shows the volume's latest state (see
 * reloadTaskVolumes for what that means for a local volume).
 */
export function taskReloadVolumes(deps: ServerDeps, tasks: TaskManager, volumes?: VolumeStore) {
  return unary<TaskReloadVolumesRequest, TaskReloadVolumesResponse>(
    deps,
    "TaskReloadVolumes",
    async (req) => {
      if (!volumes) throw new UnimplementedError("this router keeps no volumes");
      await reloadTaskVolumes(tasks.get(req.taskId), req.containerId, volumes);
      return create(TaskReloadVolumesResponseSchema);
    },
  );
}
