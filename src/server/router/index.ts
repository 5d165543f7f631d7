import { TaskCommandRouter } from "../../gen/modal_proto/task_command_router_pb.ts";
import type { ImageService } from "../../images/service.ts";
import type { MemorySnapshots } from "../../snapshots/memory-snapshots.ts";
import type { TaskManager } from "../../tasks/task-manager.ts";
import type { VolumeStore } from "../../volumes/volume-store.ts";
import type { ServerDeps } from "../transport/call.ts";
import { type BoundService, bindService } from "../transport/conformance.ts";
import { taskContainerCreate } from "./container-create.ts";
import { taskContainerGet, taskContainerList } from "./container-get.ts";
import { taskContainerTerminate, taskContainerWait } from "./container-terminate.ts";
import { taskExecPoll } from "./exec-poll.ts";
import { taskExecStart } from "./exec-start.ts";
import { taskExecStdinStatus } from "./exec-stdin-status.ts";
import { taskExecStdinWrite } from "./exec-stdin-write.ts";
import { taskExecStdinWriteStream } from "./exec-stdin-write-stream.ts";
import { taskExecStdioRead } from "./exec-stdio-read.ts";
import { taskExecWait } from "./exec-wait.ts";
import { taskMountDirectory } from "./mount-directory.ts";
import { taskReloadVolumes } from "./reload-volumes.ts";
import { sandboxStdinWrite } from "./sandbox-stdin-write.ts";
import { sandboxStdioRead } from "./sandbox-stdio-read.ts";
import { sandboxWaitUntilReady } from "./sandbox-wait-until-ready.ts";
import { taskSetNetworkAccess } from "./set-network-access.ts";
import { taskSetOutboundPolicy } from "./set-outbound-policy.ts";
import { taskSnapshotDirectory } from "./snapshot-directory.ts";
import { taskSnapshotFilesystem } from "./snapshot-filesystem.ts";
import { taskSnapshotMemory } from "./snapshot-memory.ts";
import { taskUnmountDirectory } from "./unmount-directory.ts";

/**
 * modal.task_command_router.TaskCommandRouter: all 23 RPCs of the later
 * protocol (PROTOCOL-LATER.md), one thin adapter file per RPC.
 */
export function routerService(
  deps: ServerDeps,
  tasks: TaskManager,
  images: ImageService | undefined,
  volumes?: VolumeStore,
  memorySnapshots?: MemorySnapshots,
): BoundService {
  return bindService(TaskCommandRouter, {
    taskExecPoll: taskExecPoll(deps, tasks),
    taskExecStart: taskExecStart(deps, tasks),
    taskExecStdinWrite: taskExecStdinWrite(deps, tasks),
    taskExecStdioRead: taskExecStdioRead(deps, tasks),
    taskExecWait: taskExecWait(deps, tasks),
    taskExecStdinStatus: taskExecStdinStatus(deps, tasks),
    taskExecStdinWriteStream: taskExecStdinWriteStream(deps, tasks),
    taskMountDirectory: taskMountDirectory(deps, images),
    taskSnapshotDirectory: taskSnapshotDirectory(deps, images),
    taskUnmountDirectory: taskUnmountDirectory(deps, images),
    taskSnapshotFilesystem: taskSnapshotFilesystem(deps, images),
    sandboxStdinWriteV2: sandboxStdinWrite(deps, tasks),
    sandboxStdioReadV2: sandboxStdioRead(deps, tasks),
    sandboxWaitUntilReady: sandboxWaitUntilReady(deps, tasks),
    taskContainerCreate: taskContainerCreate(deps, tasks),
    taskContainerGet: taskContainerGet(deps, tasks),
    taskContainerList: taskContainerList(deps, tasks),
    taskContainerTerminate: taskContainerTerminate(deps, tasks),
    taskContainerWait: taskContainerWait(deps, tasks),
    taskReloadVolumes: taskReloadVolumes(deps, tasks, volumes),
    taskSetNetworkAccess: taskSetNetworkAccess(deps, tasks),
    taskSetOutboundPolicy: taskSetOutboundPolicy(deps, tasks),
    taskSnapshotMemory: taskSnapshotMemory(deps, memorySnapshots),
  });
}
