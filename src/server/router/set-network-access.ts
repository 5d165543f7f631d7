import { create } from "@bufbuild/protobuf";
import { NetworkAccess_NetworkAccessType as Kind } from "../../gen/modal_proto/api_pb.ts";
import {
  type TaskSetNetworkAccessRequest,
  type TaskSetNetworkAccessResponse,
  TaskSetNetworkAccessResponseSchema,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import { type NetworkAccessType, setNetworkAccess } from "../../tasks/network-policy.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { type ServerDeps, unary } from "../transport/call.ts";

const KINDS: Record<number, NetworkAccessType> = {
  [Kind.UNSPECIFIED]: "unspecified",
  [Kind.OPEN]: "open",
  [Kind.BLOCKED]: "blocked",
  [Kind.ALLOWLIST]: "allowlist",
};

/** Replaces the task's outbound policy (§5.8; see tasks/network-policy.ts). */
export function taskSetNetworkAccess(deps: ServerDeps, tasks: TaskManager) {
  return unary<TaskSetNetworkAccessRequest, TaskSetNetworkAccessResponse>(
    deps,
    "TaskSetNetworkAccess",
    async (req) => {
      const na = req.networkAccess;
      const kind = na?.networkAccessType ?? Kind.UNSPECIFIED;
      await setNetworkAccess(tasks.get(req.taskId), {
        // A number no kind has is refused as unspecified is (only ALLOWLIST is accepted).
        type: KINDS[kind] ?? "unspecified",
        cidrs: na?.allowedCidrs ?? [],
        domains: na?.allowedDomains ?? [],
      });
      return create(TaskSetNetworkAccessResponseSchema);
    },
  );
}
