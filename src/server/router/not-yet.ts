import { UnimplementedError } from "../../errors.ts";
import { type ServerDeps, unary } from "../transport/call.ts";

/** What the RPCs of the task-level protocol (issue 12) answer until they are built. */
const REASONS = {
  TaskContainerCreate: "sidecar containers are not served by this router yet",
  TaskContainerGet: "sidecar containers are not served by this router yet",
  TaskContainerList: "sidecar containers are not served by this router yet",
  TaskContainerTerminate: "sidecar containers are not served by this router yet",
  TaskContainerWait: "sidecar containers are not served by this router yet",
  TaskReloadVolumes: "volumes are not served by this router yet",
  TaskSetNetworkAccess: "network policies are not served by this router yet",
  TaskSetOutboundPolicy: "outbound policies are not served by this router yet",
  TaskSnapshotMemory: "memory snapshots are not served by this router yet",
} as const;

type NotYet = keyof typeof REASONS;

/** A unary handler that answers UNIMPLEMENTED with the method's one-line reason. */
export function notYetUnary<Req, Res>(deps: ServerDeps, method: NotYet) {
  return unary<Req, Res>(deps, method, async () => {
    throw new UnimplementedError(REASONS[method]);
  });
}
