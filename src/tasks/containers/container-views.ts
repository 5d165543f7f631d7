import { InvalidArgumentError, NotFoundError } from "../../errors.ts";
import type { EnvSource } from "../../exec/exec-request.ts";
import { checkMaxBytes, MAX, quote } from "../../limits.ts";
import type {
  Proc,
  Runtime,
  SpawnSpec,
  TaskEnv,
  TaskSpec,
  TaskStatus,
} from "../../runtime/runtime.ts";
import { MAX_TIMER_MS } from "../../util/long-timer.ts";
import type { Caller } from "../grants.ts";
import type { ContainerRecord, ContainerResult } from "./container-record.ts";
import { MAIN } from "./container-request.ts";

/** What the containers need of their task (Task satisfies it). */
export interface ContainerTask {
  readonly id: string;
  readonly runtime: Runtime;
  readonly spec: TaskSpec;
  readonly env: TaskEnv;
  readonly state: string;
  runtimeStatus(): TaskStatus;
  /** The env vars of `sources` for `caller` (PermissionDenied / NotFound before anything starts). */
  resolveEnv(sources: readonly EnvSource[], caller: Caller): Record<string, string>;
}

/** Where an exec of the task runs: its main container or a sidecar. */
export interface ExecPlace {
  readonly env: TaskEnv;
  resolvePath(path: string): string;
  spawn(spec: SpawnSpec): Promise<Proc>;
}

/** What TaskContainerGet/List tell of one container. */
export interface ContainerInfo {
  /** "" for the main container. */
  id: string;
  name: string;
  /** Free-form: "running", "exited", "terminated", "stopped (REASON)". */
  status: string;
  /** Unset while it runs. */
  result: ContainerResult | undefined;
}

/** The main container as TaskContainerGet/List tell it: running while the task's container runs. */
export function mainInfo(task: ContainerTask): ContainerInfo {
  const rs = task.runtimeStatus();
  if (task.state === "running" && rs.state === "running") {
    return { id: "", name: MAIN, status: "running", result: undefined };
  }
  const why = rs.state === "running" ? task.state : (rs.reason ?? "exited");
  return {
    id: "",
    name: MAIN,
    status: `stopped (${why})`,
    result: {
      status: "terminated",
      exitCode: 137,
      message: `the task's container stopped: ${why}`,
    },
  };
}

/**
 * TaskContainerGet: "main", else the running sidecar named `name`, else
 * (with `includeTerminated`) the newest ended one; NotFound when none.
 */
export function findByName(
  task: ContainerTask,
  records: readonly ContainerRecord[],
  name: string,
  includeTerminated: boolean,
): ContainerInfo {
  checkMaxBytes("container_name", name, MAX.containerId);
  if (name === "") throw new InvalidArgumentError("container_name must not be empty");
  if (name === MAIN) return mainInfo(task);
  const named = records.filter((r) => r.name === name).reverse();
  const rec = named.find((r) => !r.result) ?? (includeTerminated ? named[0] : undefined);
  if (rec) return infoOf(rec);
  const which = includeTerminated ? "" : "running ";
  throw new NotFoundError(`no ${which}container named ${quote(name)} in task ${task.id}`);
}

/** A sidecar as TaskContainerGet/List tell it. */
export function infoOf(rec: ContainerRecord): ContainerInfo {
  const r = rec.result;
  return {
    id: rec.id,
    name: rec.name,
    status: !r ? "running" : r.status === "terminated" ? "terminated" : "exited",
    result: r ? { ...r } : undefined,
  };
}

/** Execs in the task's main container: the task's own runtime, defaults and paths. */
export function mainPlace(t: ContainerTask): ExecPlace {
  return {
    env: t.env,
    resolvePath: (p) => t.runtime.resolvePath(t.id, p),
    spawn: (spec) => t.runtime.spawn(t.id, spec),
  };
}

/** Callers waiting for a change (TaskContainerWait): `wake` lets each check its condition again. */
export class Wakeups {
  private readonly waiters = new Set<() => void>();

  wake(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Resolves once `done()` holds (checked at each wake), after `timeoutMs`, or when `signal` aborts. */
  async until(done: () => boolean, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const end = Date.now() + Math.min(timeoutMs, MAX_TIMER_MS);
    while (!done() && Date.now() < end && !signal?.aborted) {
      await new Promise<void>((resolve) => {
        const stop = () => {
          clearTimeout(t);
          signal?.removeEventListener("abort", stop);
          this.waiters.delete(stop);
          resolve();
        };
        const t = setTimeout(stop, end - Date.now());
        signal?.addEventListener("abort", stop);
        this.waiters.add(stop);
      });
    }
  }
}
