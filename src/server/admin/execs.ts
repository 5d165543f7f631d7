import type { TaskManager } from "../../tasks/task-manager.ts";
import type { ServerDeps } from "../transport/call.ts";
import { execsInspect } from "./execs-inspect.ts";
import { execsList } from "./execs-list.ts";
import { execsResize } from "./execs-resize.ts";
import { execsSignal } from "./execs-signal.ts";

/** Handlers of taskrouter.v1.Execs (our exec extensions), one adapter file per RPC. */
export function execsService(deps: ServerDeps, tasks: TaskManager) {
  return {
    resizeExec: execsResize(deps, tasks),
    signalExec: execsSignal(deps, tasks),
    listExecs: execsList(deps, tasks),
    inspectExec: execsInspect(deps, tasks),
  };
}
