import { create } from "@bufbuild/protobuf";
import { InvalidArgumentError } from "../../errors.ts";
import {
  NetworkAccess_NetworkAccessType as NetType,
  type PTYInfo,
} from "../../gen/modal_proto/api_pb.ts";
import {
  type TaskContainerCreateRequest,
  type TaskContainerCreateResponse,
  TaskContainerCreateResponseSchema,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import type { ContainerPty } from "../../tasks/containers/container-pty.ts";
import type { ContainerRequest } from "../../tasks/containers/container-request.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import { type ServerDeps, unary } from "../transport/call.ts";
import { envSources, ptyFields, ptyType } from "./exec-start.ts";

const NET_KINDS = {
  [NetType.UNSPECIFIED]: "unspecified",
  [NetType.OPEN]: "open",
  [NetType.BLOCKED]: "blocked",
  [NetType.ALLOWLIST]: "allowlist",
} as const;

/** Maps `pty_info` (undefined unless `enabled`): sizes of 0 mean 24x80, as for execs. */
function toContainerPty(p: PTYInfo | undefined): ContainerPty | undefined {
  if (!p?.enabled) return undefined;
  return { ...ptyFields(p), type: ptyType(p) };
}

/** Maps the wire request to the domain's ContainerRequest (enums checked here). */
export function toContainerRequest(req: TaskContainerCreateRequest): ContainerRequest {
  const na = req.networkAccess;
  const kind = na ? NET_KINDS[na.networkAccessType] : undefined;
  if (na && !kind) {
    throw new InvalidArgumentError(`unknown network_access_type ${na.networkAccessType}`);
  }
  return {
    name: req.containerName,
    imageId: req.imageId,
    argv: req.args,
    envSources: envSources(req),
    workdir: req.workdir === "" ? undefined : req.workdir,
    volumeMounts: req.volumeMounts.map((v) => ({
      name: v.volumeId,
      path: v.mountPath,
      readOnly: v.readOnly,
      subPath: v.subPath,
      backgroundCommits: v.allowBackgroundCommits,
    })),
    network: na && kind ? { kind, cidrs: na.allowedCidrs, domains: na.allowedDomains } : undefined,
    pty: toContainerPty(req.ptyInfo),
    memoryMib: req.memoryReserveConsumeMib,
  };
}

/** TaskContainerCreate: starts a sidecar container; an identical replay returns it again. */
export function taskContainerCreate(deps: ServerDeps, tasks: TaskManager) {
  return unary<TaskContainerCreateRequest, TaskContainerCreateResponse>(
    deps,
    "TaskContainerCreate",
    async (req, ctx) => {
      const task = tasks.get(req.taskId);
      const c = await task.containers.create(toContainerRequest(req), ctx.caller);
      return create(TaskContainerCreateResponseSchema, {
        containerId: c.id,
        containerName: c.name,
      });
    },
  );
}
