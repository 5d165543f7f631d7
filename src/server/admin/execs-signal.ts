import { create } from "@bufbuild/protobuf";
import { InvalidArgumentError } from "../../errors.ts";
import {
  type SignalExecRequest,
  type SignalExecResponse,
  SignalExecResponseSchema,
} from "../../gen/taskrouter/v1/execs_pb.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { type ServerDeps, unary } from "../transport/call.ts";

export function execsSignal(deps: ServerDeps, tasks: TaskManager) {
  return unary<SignalExecRequest, SignalExecResponse>(deps, "SignalExec", async (req) => {
    if (req.signal.case === undefined) {
      throw new InvalidArgumentError("signal must be set (a number or a name)");
    }
    tasks.signalExec(req.taskId, req.execId, req.signal.value);
    return create(SignalExecResponseSchema);
  });
}
