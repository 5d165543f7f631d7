import type { AdoptedProc, Proc, SpawnSpec } from "./proc.ts";
import type { SidecarRuntime } from "./sidecars.ts";
import type { ImageResolver, TaskFilesystem, VolumeBind } from "./task-filesystem.ts";
import type { NetworkPolicy, TaskNetworkInfo } from "./task-network.ts";

// The types of a runtime's processes, filesystems and networks live beside this file.
export type {
  AdoptedProc,
  ExitStatus,
  OutputFile,
  OutputReader,
  Proc,
  ProcOutput,
  SpawnSpec,
  StdinState,
} from "./proc.ts";
export type { ImageResolver, TaskFilesystem, VolumeBind } from "./task-filesystem.ts";
export type { NetworkPolicy, TaskNetworkInfo } from "./task-network.ts";

/**
 * Resources and network of a task, fixed when it is created. Runtimes that
 * cannot enforce them refuse a non-empty spec (see `Runtime.checkSpec`).
 */
export interface TaskSpec {
  /** Memory limit in bytes (swap included). */
  memoryBytes?: number;
  /** CPU limit in cores, e.g. 0.5. */
  cpus?: number;
  /** Maximum number of processes (threads) in the task. */
  pidsLimit?: number;
  /**
   * "none": own network namespace with loopback only (the default); "host": this machine's;
   * "open": own namespace with a route out (veth, NAT) that a NetworkPolicy may restrict.
   */
  network?: "none" | "host" | "open";
  /** Id of a stored image that is the task's root filesystem (runc); absent: the host image. */
  image?: string;
  /**
   * The memory snapshot the task was restored from (a record only: the
   * restore itself is `prepareTask`'s `restore`); absent: none.
   */
  memorySnapshot?: string;
  /** Volumes bound into the task, sorted by path (runtimes with `mountsVolumes`); absent: none. */
  volumes?: VolumeBind[];
}

/** What a runtime sees of a task right now. */
export interface TaskStatus {
  /** "stopped": the task's isolated environment died; no command can start in it. */
  state: "running" | "stopped";
  /** Why it stopped, when known ("oom": the task hit its memory limit). */
  reason?: string;
}

/** Facts about a task that a runtime prepared. */
export interface TaskEnv {
  /** Default working directory, a path inside the task. */
  defaultWorkdir: string;
  /** Base environment of every command in the task (PATH, HOME, LANG, ...). */
  baseEnv: Record<string, string>;
}

/**
 * Where commands run. One runtime serves many tasks; a task is an isolated
 * (or, for `host`, not isolated) place with its own filesystem view.
 *
 * Contract:
 * - `prepareTask` is idempotent: it creates what the task needs or adopts what
 *   a previous router left in the data dir.
 * - `destroyTask` frees everything the task holds (after the caller killed its
 *   process groups); it succeeds when there is nothing left to free.
 * - `resolvePath` maps an absolute path inside the task to a path on this
 *   machine, never outside the task's filesystem.
 * - `spawn` starts a process synchronously and never throws for a missing or
 *   non-executable program (see `Proc`).
 */
export interface Runtime {
  readonly name: string;
  /** A warning to print at start (e.g. the host runtime isolates nothing), or undefined. */
  readonly warning: string | undefined;
  /**
   * `spec`: the task's limits and network (already accepted by `checkSpec`).
   * `existing`: the task was created by an earlier router (adopt what is left).
   * `restore`: a directory `checkpoint` of this runtime filled; the new task
   * starts from it (its processes continue from their memory state).
   */
  prepareTask(
    taskId: string,
    spec?: TaskSpec,
    opts?: { existing?: boolean; restore?: string },
  ): Promise<TaskEnv>;
  destroyTask(taskId: string): Promise<void>;
  resolvePath(taskId: string, path: string): string;
  spawn(taskId: string, spec: SpawnSpec): Promise<Proc>;
  /** Frees the runtime's own helpers when the router stops (what it must finish, awaited). */
  close?(): void | Promise<void>;
  /**
   * Throws InvalidArgument when the runtime cannot give a task `spec`. Absent:
   * the runtime enforces no limits and accepts only an empty spec.
   */
  checkSpec?(spec: TaskSpec): void;
  /**
   * The runtime binds `TaskSpec.volumes` into its tasks (shared with every
   * task that mounts the same volume). Absent/false: a task with volumes is
   * refused (FailedPrecondition naming the runtime).
   */
  readonly mountsVolumes?: boolean;
  /**
   * How much earlier than usual an exec with a timeout is killed on this
   * runtime, in ms: the time it takes, after a kill, to report the process's
   * end and close its pipes (runsc: its `runsc exec` outlives the process by
   * ~100 ms and more under load). Absent: 0.
   */
  readonly timeoutLeadMs?: number;
  /** The task's live state; absent: tasks are always running while they exist. */
  status?(taskId: string): TaskStatus;
  /**
   * The task's own root filesystem (see TaskFilesystem); absent: its tasks
   * have none and see this machine's.
   */
  taskFilesystem?(taskId: string): TaskFilesystem;
  /**
   * Lets tasks have a stored image as their root (`TaskSpec.image`), found
   * through `resolve`. Called once, before tasks load; absent: the runtime
   * cannot root tasks on images.
   */
  useImages?(resolve: ImageResolver): void;
  /**
   * The processes of task `taskId` that were started with
   * `SpawnSpec.persist` by an earlier router and are not released yet,
   * running or ended (their output and exit status are kept). Called once
   * per task, after `prepareTask(..., { existing: true })`. Absent: processes
   * never outlive the router.
   */
  adopt?(taskId: string): Promise<AdoptedProc[]>;
  /**
   * Replaces the outbound policy of task `taskId`, whose network is "open"
   * (FailedPrecondition otherwise), and keeps it with the task (a restarted
   * router enforces it again). Resolves once it is enforced; connections it
   * no longer allows stop passing data. Absent: the runtime cannot police a
   * task's network.
   */
  setNetworkPolicy?(taskId: string, policy: NetworkPolicy): Promise<void>;
  /** The task's own network when it is "open" and set up; undefined otherwise. */
  taskNetwork?(taskId: string): TaskNetworkInfo | undefined;
  /** Extra (sidecar) containers of its tasks (see sidecars.ts); absent: none. */
  readonly sidecars?: SidecarRuntime;
  /**
   * Checkpoints the running task `taskId` into the empty directory `dir`
   * (the memory of its processes and what a restore needs of its files);
   * afterwards the task's processes are gone and the caller ends the task.
   * Returns the checkpoint's format (the OCI runtime that made it: only it
   * can restore it). FailedPrecondition, naming the runtime and its reason,
   * when it cannot; the task is then left running. Absent: the runtime
   * cannot checkpoint tasks.
   */
  checkpoint?(taskId: string, dir: string): Promise<{ format: string }>;
}
