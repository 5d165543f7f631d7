import { oomKillCount } from "../../linux/cgroup.ts";
import { procStart } from "../../linux/proc.ts";
import type { TaskStatus } from "../runtime.ts";
import type { ContainerState } from "./oci-cli.ts";

interface TaskInfo {
  cgroupsPath: string;
  /** Host pid and start time of the container's init; undefined once stopped. */
  init: { pid: number; start: string } | undefined;
  stopReason: string | undefined;
}

/**
 * What the runc runtime knows of its tasks' containers: each one's init
 * (host pid and start time, which name one process across pid reuse) while
 * it runs, and once it stopped, why ("oom" when the task's cgroup saw an
 * OOM kill, "exited" otherwise).
 */
export class TaskStates {
  private readonly tasks = new Map<string, TaskInfo>();

  /** Records task `taskId` as the OCI runtime reports its container (`state`; undefined: none). */
  track(taskId: string, cgroupsPath: string, state: ContainerState | undefined): void {
    const info: TaskInfo = { cgroupsPath, init: undefined, stopReason: undefined };
    const start = state && state.pid > 0 ? procStart(state.pid) : undefined;
    if (state && state.status !== "stopped" && start !== undefined) {
      info.init = { pid: state.pid, start };
    } else {
      info.stopReason = stopReason(info);
    }
    this.tasks.set(taskId, info);
  }

  status(taskId: string): TaskStatus {
    const info = this.tasks.get(taskId);
    if (!info) return { state: "stopped", reason: "unknown to the runtime" };
    if (info.init && procStart(info.init.pid) !== info.init.start) {
      info.init = undefined;
      info.stopReason = stopReason(info);
    }
    if (info.init) return { state: "running" };
    return { state: "stopped", reason: info.stopReason ?? "exited" };
  }

  /** The host pid of the task's init while it runs; undefined otherwise. */
  initPid(taskId: string): number | undefined {
    return this.status(taskId).state === "running" ? this.tasks.get(taskId)?.init?.pid : undefined;
  }

  forget(taskId: string): void {
    this.tasks.delete(taskId);
  }
}

function stopReason(info: TaskInfo): string {
  return (oomKillCount(info.cgroupsPath) ?? 0) > 0 ? "oom" : "exited";
}
