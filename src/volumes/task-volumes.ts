import { FailedPreconditionError } from "../errors.ts";
import type { TaskSpec, TaskStatus, VolumeBind } from "../runtime/runtime.ts";
import { NO_SIDECAR_VOLUMES, type SidecarVolumes, StoreSidecarVolumes } from "./sidecar-volumes.ts";
import { checkMountRequests, type VolumeMountRequest } from "./validate.ts";
import type { VolumeStore } from "./volume-store.ts";

/** A runtime, as far as volumes are concerned. */
export interface VolumeRuntime {
  readonly name: string;
  /** See Runtime.mountsVolumes. */
  readonly mountsVolumes?: boolean;
}

/**
 * What the task manager needs of volumes: a collaborator of its create, load
 * and terminate. A task holds its volumes from `attach` (or `adopt`) until
 * `release`, and a held volume cannot be removed.
 */
export interface TaskVolumes {
  /**
   * Checks the volumes of a new task on `runtime` before anything is made:
   * InvalidArgument (checkMountRequests), FailedPrecondition for a runtime
   * that cannot mount volumes. Returns them sorted by path.
   */
  check(mounts: readonly VolumeMountRequest[], runtime: VolumeRuntime): VolumeMountRequest[];
  /**
   * Holds checked `mounts` for new task `taskId`, all or none (NotFound for
   * an unknown volume); returns its TaskSpec.volumes.
   */
  attach(taskId: string, mounts: readonly VolumeMountRequest[]): VolumeBind[];
  /**
   * Holds again the volumes of a task an earlier router created (`binds`
   * from its record); returns its binds with today's host directories.
   * A volume that is gone stays in the task's binds (its running container
   * still has it) and is reported to the warn callback.
   */
  adopt(taskId: string, binds: readonly VolumeBind[]): VolumeBind[];
  /** Lets the volumes of `taskId` and of its sidecars go (terminated, or its create failed). */
  release(taskId: string): void;
  /** The volumes of the task's sidecars (TaskContainerCreate.volume_mounts). */
  readonly sidecars: SidecarVolumes;
}

/** For a router without volumes: every task with one is refused, nothing is held. */
export const NO_VOLUMES: TaskVolumes = {
  check(mounts) {
    if (mounts.length > 0) throw new FailedPreconditionError("this router keeps no volumes");
    return [];
  },
  attach: () => [],
  adopt: (_id, binds) => [...binds],
  release: () => {},
  sidecars: NO_SIDECAR_VOLUMES,
};

/** TaskVolumes over the router's volume store. */
export class StoreTaskVolumes implements TaskVolumes {
  readonly sidecars: SidecarVolumes;

  constructor(
    private readonly store: VolumeStore,
    private readonly warn: (msg: string) => void = () => {},
  ) {
    this.sidecars = new StoreSidecarVolumes(store, warn);
  }

  check(mounts: readonly VolumeMountRequest[], runtime: VolumeRuntime): VolumeMountRequest[] {
    const checked = checkMountRequests(mounts);
    if (checked.length > 0 && !runtime.mountsVolumes) {
      throw new FailedPreconditionError(
        `the ${runtime.name} runtime cannot mount volumes (its tasks share this machine's ` +
          "filesystem and have no mount namespace): create the task on runc",
      );
    }
    return checked;
  }

  attach(taskId: string, mounts: readonly VolumeMountRequest[]): VolumeBind[] {
    const sources = this.store.hold(
      taskId,
      mounts.map((m) => m.name),
    );
    return mounts.map((m, i) => ({
      name: m.name,
      source: sources[i] as string,
      path: m.path,
      readOnly: m.readOnly,
    }));
  }

  adopt(taskId: string, binds: readonly VolumeBind[]): VolumeBind[] {
    const missing = new Set(
      this.store.adopt(
        taskId,
        binds.map((b) => b.name),
      ),
    );
    for (const name of missing) {
      this.warn(`task ${taskId}: its volume ${name} no longer exists (the task keeps its mount)`);
    }
    return binds.map((b) =>
      missing.has(b.name) ? { ...b } : { ...b, source: this.store.hostDir(b.name) },
    );
  }

  release(taskId: string): void {
    this.store.release(taskId);
  }
}

/** A task, as far as TaskReloadVolumes is concerned. */
export interface ReloadableTask {
  readonly id: string;
  readonly state: string;
  readonly spec: TaskSpec;
  runtimeStatus(): TaskStatus;
  readonly containers: {
    /**
     * TaskReloadVolumes for sidecar `containerId`: NotFound when the task
     * has none of that id, FailedPrecondition when it (or the task) is not
     * running; see SidecarVolumes.reload.
     */
    reloadVolumes(containerId: string): Promise<void>;
  };
}

/**
 * TaskReloadVolumes (PROTOCOL-LATER §3.5): makes every volume mount of the
 * task's container `containerId` ("" = main, else one of its sidecars)
 * show the volume's latest state. NotFound for an unknown container;
 * FailedPrecondition for a task (or sidecar) that is not running, or a
 * volume its backend cannot bring up to date (VolumeBackend.reload);
 * NotFound for one removed behind the router's back. A container without
 * volumes: OK.
 */
export async function reloadTaskVolumes(
  task: ReloadableTask,
  containerId: string,
  store: VolumeStore,
): Promise<void> {
  if (containerId !== "") return task.containers.reloadVolumes(containerId);
  const rs = task.runtimeStatus();
  if (task.state !== "running" || rs.state !== "running") {
    throw new FailedPreconditionError(
      `task ${task.id} is not running${rs.state === "running" ? "" : ` (its container stopped: ${rs.reason ?? "unknown"})`}`,
    );
  }
  for (const v of task.spec.volumes ?? []) await store.reload(v.name);
}
