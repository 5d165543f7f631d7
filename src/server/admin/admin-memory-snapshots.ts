import { create } from "@bufbuild/protobuf";
import {
  type DeleteMemorySnapshotRequest,
  type DeleteMemorySnapshotResponse,
  DeleteMemorySnapshotResponseSchema,
  type ListMemorySnapshotsRequest,
  type ListMemorySnapshotsResponse,
  ListMemorySnapshotsResponseSchema,
  type MemorySnapshotInfo,
  MemorySnapshotInfoSchema,
} from "../../gen/taskrouter/v1/memory_snapshots_pb.ts";
import type { MemorySnapshots } from "../../snapshots/memory-snapshots.ts";
import type { SnapshotRecord } from "../../snapshots/snapshot-record.ts";
import { type ServerDeps, unary } from "../transport/call.ts";

function toMsg(r: SnapshotRecord): MemorySnapshotInfo {
  return create(MemorySnapshotInfoSchema, {
    snapshotId: r.id,
    taskId: r.taskId,
    runtime: r.runtime,
    ociRuntime: r.format,
    createdAtMs: BigInt(r.createdAt),
    expiresAtMs: BigInt(r.expiresAt),
    bytes: BigInt(r.bytes),
  });
}

/** Handlers of taskrouter.v1.MemorySnapshots (admin API), one thin adapter per RPC. */
export function memorySnapshotsService(deps: ServerDeps, snapshots: MemorySnapshots) {
  return {
    listMemorySnapshots: unary<ListMemorySnapshotsRequest, ListMemorySnapshotsResponse>(
      deps,
      "ListMemorySnapshots",
      async () =>
        create(ListMemorySnapshotsResponseSchema, { snapshots: snapshots.list().map(toMsg) }),
    ),
    deleteMemorySnapshot: unary<DeleteMemorySnapshotRequest, DeleteMemorySnapshotResponse>(
      deps,
      "DeleteMemorySnapshot",
      async (req) =>
        create(DeleteMemorySnapshotResponseSchema, {
          existed: await snapshots.delete(req.snapshotId),
        }),
    ),
  };
}
