import { create } from "@bufbuild/protobuf";
import {
  type CreateVolumeRequest,
  type CreateVolumeResponse,
  CreateVolumeResponseSchema,
  type DeleteVolumeRequest,
  type DeleteVolumeResponse,
  DeleteVolumeResponseSchema,
  type ListVolumesRequest,
  type ListVolumesResponse,
  ListVolumesResponseSchema,
  type TaskVolume,
  TaskVolumeSchema,
  type VolumeInfo as VolumeInfoMsg,
  VolumeInfoSchema,
} from "../../gen/taskrouter/v1/volumes_pb.ts";
import type { VolumeBind } from "../../runtime/runtime.ts";
import type { VolumeMountRequest } from "../../volumes/validate.ts";
import type { VolumeInfo, VolumeStore } from "../../volumes/volume-store.ts";
import { type ServerDeps, unary } from "../transport/call.ts";

function toMsg(v: VolumeInfo): VolumeInfoMsg {
  return create(VolumeInfoSchema, {
    name: v.name,
    createdAtMs: BigInt(v.createdAt),
    sizeBytes: BigInt(v.sizeBytes),
    mountedBy: v.mountedBy,
  });
}

/** CreateTaskRequest.volumes → the domain's mount requests (checked by the task manager). */
export function volumeRequestsOf(msgs: readonly TaskVolume[]): VolumeMountRequest[] {
  return msgs.map((m) => ({ name: m.name, path: m.path, readOnly: m.readOnly }));
}

/** A task's volumes (TaskSpec.volumes) → Task.volumes. */
export function taskVolumesMsg(binds: readonly VolumeBind[] | undefined): TaskVolume[] {
  return (binds ?? []).map((b) =>
    create(TaskVolumeSchema, { name: b.name, path: b.path, readOnly: b.readOnly }),
  );
}

/** Handlers of taskrouter.v1.Volumes (admin API), one thin adapter per RPC. */
export function volumesService(deps: ServerDeps, volumes: VolumeStore) {
  return {
    createVolume: unary<CreateVolumeRequest, CreateVolumeResponse>(
      deps,
      "CreateVolume",
      async (req) => {
        const { info, created } = await volumes.create(req.name);
        return create(CreateVolumeResponseSchema, { volume: toMsg(info), created });
      },
    ),
    listVolumes: unary<ListVolumesRequest, ListVolumesResponse>(deps, "ListVolumes", async () =>
      create(ListVolumesResponseSchema, { volumes: (await volumes.list()).map(toMsg) }),
    ),
    deleteVolume: unary<DeleteVolumeRequest, DeleteVolumeResponse>(
      deps,
      "DeleteVolume",
      async (req) => {
        await volumes.delete(req.name);
        return create(DeleteVolumeResponseSchema);
      },
    ),
  };
}
