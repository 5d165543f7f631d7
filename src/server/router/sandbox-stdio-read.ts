import { create } from "@bufbuild/protobuf";
import { InvalidArgumentError } from "../../errors.ts";
import {
  SandboxStdioFileDescriptor,
  type SandboxStdioReadV2Request,
  type SandboxStdioReadV2Response,
  SandboxStdioReadV2ResponseSchema,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import { serializer } from "../../rpc/service-def.ts";
import { entrypointOf } from "../../tasks/entrypoint.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { type ServerDeps, serverStream, wireOffset } from "../transport/call.ts";
import { chunkFraming } from "../transport/raw-frames.ts";

/**
 * The entrypoint's stdout or stderr from `offset` (§5.5): every message
 * carries `starting_offset`, the absolute position of its first byte (the
 * first one can be above `offset` when older output is no longer retained).
 */
export function sandboxStdioRead(deps: ServerDeps, tasks: TaskManager) {
  return serverStream<SandboxStdioReadV2Request, SandboxStdioReadV2Response>(
    deps,
    "SandboxStdioReadV2",
    async function* (req, { signal }) {
      const fd = req.fileDescriptor;
      const stream =
        fd === SandboxStdioFileDescriptor.STDOUT
          ? "stdout"
          : fd === SandboxStdioFileDescriptor.STDERR
            ? "stderr"
            : undefined;
      if (!stream) throw new InvalidArgumentError(`unknown file_descriptor ${fd}`);
      const entrypoint = entrypointOf(tasks.get(req.taskId));
      for await (const c of entrypoint.read(stream, wireOffset(req.offset), signal)) {
        yield create(SandboxStdioReadV2ResponseSchema, {
          data: c.data,
          startingOffset: BigInt(c.offset),
        });
      }
    },
    RAW,
  );
}

/** As TaskExecStdioRead's: frames built in the chunk's headroom, buffers back to the reader's pool. */
const RAW = chunkFraming<SandboxStdioReadV2Response>(serializer(SandboxStdioReadV2ResponseSchema));
