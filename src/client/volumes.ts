import { create } from "@bufbuild/protobuf";
import {
  CreateVolumeRequestSchema,
  type CreateVolumeResponse,
  DeleteVolumeRequestSchema,
  ListVolumesRequestSchema,
  type ListVolumesResponse,
  type VolumeInfo,
  Volumes,
} from "../gen/taskrouter/v1/volumes_pb.ts";
import type { RouterClient } from "./client.ts";
import { methodsOf } from "./methods.ts";

const def = methodsOf(Volumes);

/**
 * The volumes admin API (taskrouter.v1.Volumes) over a RouterClient's channel.
 * Creating is safe to retry (an existing volume: OK, `created` false);
 * deleting answers NOT_FOUND for an unknown volume and FAILED_PRECONDITION
 * while a task mounts it.
 */
export class VolumesClient {
  constructor(private readonly client: RouterClient) {}

  /** Creates an empty volume; `created` is false when it existed already. */
  async create(name: string): Promise<{ volume: VolumeInfo; created: boolean }> {
    const res = await this.client.unary<CreateVolumeResponse>(
      def("createVolume"),
      create(CreateVolumeRequestSchema, { name }),
    );
    if (!res.volume) throw new Error("CreateVolume returned no volume");
    return { volume: res.volume, created: res.created };
  }

  /** Every volume (size, tasks that mount it), sorted by name. */
  async list(): Promise<VolumeInfo[]> {
    const res = await this.client.unary<ListVolumesResponse>(
      def("listVolumes"),
      create(ListVolumesRequestSchema, {}),
    );
    return res.volumes;
  }

  /** Removes a volume and its files. */
  async delete(name: string): Promise<void> {
    await this.client.unary(def("deleteVolume"), create(DeleteVolumeRequestSchema, { name }));
  }
}
