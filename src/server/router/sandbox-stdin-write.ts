import { create } from "@bufbuild/protobuf";
import {
  type SandboxStdinWriteV2Request,
  type SandboxStdinWriteV2Response,
  SandboxStdinWriteV2ResponseSchema,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import { entrypointOf } from "../../tasks/entrypoint.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { type ServerDeps, unary, wireOffset } from "../transport/call.ts";

/** Bytes and/or EOF at `offset` into the entrypoint's stdin (§5.5: TaskExecStdinWrite's rules). */
export function sandboxStdinWrite(deps: ServerDeps, tasks: TaskManager) {
  return unary<SandboxStdinWriteV2Request, SandboxStdinWriteV2Response>(
    deps,
    "SandboxStdinWriteV2",
    async (req, { signal }) => {
      const entrypoint = entrypointOf(tasks.get(req.taskId));
      await entrypoint.stdin.write(wireOffset(req.offset), req.data, req.eof, signal);
      return create(SandboxStdinWriteV2ResponseSchema);
    },
  );
}
