import type {
  TaskSetExperimentalOutboundPolicyRequest,
  TaskSetExperimentalOutboundPolicyResponse,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import { refuseOutboundPolicy } from "../../tasks/network-policy.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { type ServerDeps, unary } from "../transport/call.ts";

/** FAILED_PRECONDITION for every task found (§5.9; see refuseOutboundPolicy). */
export function taskSetOutboundPolicy(deps: ServerDeps, tasks: TaskManager) {
  return unary<TaskSetExperimentalOutboundPolicyRequest, TaskSetExperimentalOutboundPolicyResponse>(
    deps,
    "TaskSetOutboundPolicy",
    async (req) => refuseOutboundPolicy(tasks.get(req.taskId)),
  );
}
