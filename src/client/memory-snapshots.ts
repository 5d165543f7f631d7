import { create } from "@bufbuild/protobuf";
import {
  DeleteMemorySnapshotRequestSchema,
  type DeleteMemorySnapshotResponse,
  ListMemorySnapshotsRequestSchema,
  type ListMemorySnapshotsResponse,
  type MemorySnapshotInfo,
  MemorySnapshots,
} from "../gen/taskrouter/v1/memory_snapshots_pb.ts";
import type { RouterClient } from "./client.ts";
import { methodsOf } from "./methods.ts";

const def = methodsOf(MemorySnapshots);

/**
 * The memory snapshots admin API (taskrouter.v1.MemorySnapshots) over a
 * RouterClient's channel. Both calls are safe to retry.
 */
export class MemorySnapshotsClient {
  constructor(private readonly client: RouterClient) {}

  /** The snapshots that have not expired, oldest first. */
  async list(): Promise<MemorySnapshotInfo[]> {
    const res = await this.client.unary<ListMemorySnapshotsResponse>(
      def("listMemorySnapshots"),
      create(ListMemorySnapshotsRequestSchema, {}),
    );
    return res.snapshots;
  }

  /** Deletes a snapshot; false when there was none. */
  async delete(snapshotId: string): Promise<boolean> {
    const res = await this.client.unary<DeleteMemorySnapshotResponse>(
      def("deleteMemorySnapshot"),
      create(DeleteMemorySnapshotRequestSchema, { snapshotId }),
    );
    return res.existed;
  }
}
