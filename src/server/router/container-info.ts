import { create } from "@bufbuild/protobuf";
import {
  type GenericResult,
  GenericResult_GenericStatus,
  GenericResultSchema,
} from "../../gen/modal_proto/api_pb.ts";
import {
  type TaskContainerInfo,
  TaskContainerInfoSchema,
} from "../../gen/modal_proto/task_command_router_pb.ts";
import type { ContainerResult } from "../../tasks/containers/container-record.ts";
import type { ContainerInfo } from "../../tasks/containers/container-views.ts";

const STATUS: Record<ContainerResult["status"], GenericResult_GenericStatus> = {
  success: GenericResult_GenericStatus.SUCCESS,
  failure: GenericResult_GenericStatus.FAILURE,
  terminated: GenericResult_GenericStatus.TERMINATED,
};

/** A container's result as modal.client.GenericResult (status, exception, exitcode). */
export function toGenericResult(r: ContainerResult): GenericResult {
  return create(GenericResultSchema, {
    status: STATUS[r.status],
    exception: r.message,
    exitcode: r.exitCode,
  });
}

/** Domain ContainerInfo → TaskContainerInfo (result unset while it runs). */
export function toContainerInfoMsg(c: ContainerInfo): TaskContainerInfo {
  return create(TaskContainerInfoSchema, {
    containerId: c.id,
    containerName: c.name,
    status: c.status,
    ...(c.result ? { result: toGenericResult(c.result) } : {}),
  });
}
