import type {
  ExitStatus,
  NetworkPolicy,
  Proc,
  SpawnSpec,
  TaskEnv,
  TaskFilesystem,
  VolumeBind,
} from "./runtime.ts";

/** How a sidecar container is started (SidecarRuntime.start). */
export interface SidecarSpec {
  /** Id of a stored image: the sidecar's own root filesystem. */
  imageId: string;
  /** The entrypoint's argv (non-empty; argv[0] looked up in the PATH of `env`). */
  argv: string[];
  /** The entrypoint's complete environment. */
  env: Record<string, string>;
  /** Working directory inside the sidecar; undefined: the image's default (/root, else /). */
  cwd: string | undefined;
  /** The task's network: "none" (its own namespace, which the sidecar joins) or "host". */
  network: "none" | "host";
  /** Memory limit of the sidecar's cgroup, bytes (swap included); undefined: none. */
  memoryBytes: number | undefined;
  /**
   * Volume directories bound into the sidecar (checked, sorted by path), as
   * a task's TaskSpec.volumes; a source stays valid only until `start`
   * resolved (it may name an open directory: `/proc/<pid>/fd/N`).
   */
  volumes: VolumeBind[];
  /**
   * The entrypoint's terminal: it runs on a new pseudo-terminal of this
   * window size (stdin, stdout, stderr; its controlling terminal), whose
   * output is read and discarded for as long as it runs; undefined: no
   * terminal (its stdio is /dev/null).
   */
  pty: { rows: number; cols: number } | undefined;
  /**
   * The sidecar's own outbound allowlist (tasks made with `--network open`
   * only: the sidecar joins that namespace), enforced on its traffic before its entrypoint runs,
   * while the task's other containers keep the task's policy; undefined:
   * the task's policy applies to it. A runtime that cannot enforce it
   * refuses the start with FailedPrecondition.
   */
  policy: NetworkPolicy | undefined;
}

/** Where a sidecar's entrypoint stands (SidecarRuntime.poll). */
export type SidecarState =
  | { ended: false }
  /** `status` undefined: it ended without an exit status (killed with its whole container). */
  | { ended: true; status: ExitStatus | undefined };

/**
 * Extra containers of a task ("sidecars", PROTOCOL-LATER §3.4): each from a
 * stored image, with its own root filesystem and processes (its own pid
 * namespace), sharing the task's network namespace. A sidecar is named by
 * its task and a container id the caller chose (`ctr-...`).
 *
 * Contract:
 * - `check` throws FailedPrecondition, naming the runtime and why, when the
 *   task cannot have sidecars; every other method assumes it passed.
 * - `start` makes nothing on failure (NotFound for an unknown image,
 *   FailedPrecondition for a missing workdir or a task that is not running)
 *   and resolves once the entrypoint runs; the TaskEnv is the sidecar's own
 *   (default workdir of its image, base environment).
 * - The entrypoint's end is observed with `poll`; `kill` ends every process
 *   of the sidecar (idempotent). A sidecar's files stay until the task is
 *   destroyed (Runtime.destroyTask removes its sidecars too).
 * - Sidecars outlive the router: `adopt` takes over one an earlier router
 *   started (running or ended).
 */
export interface SidecarRuntime {
  check(taskId: string): void;
  start(taskId: string, containerId: string, spec: SidecarSpec): Promise<TaskEnv>;
  adopt(taskId: string, containerId: string, imageId: string): Promise<TaskEnv>;
  poll(taskId: string, containerId: string): SidecarState;
  kill(taskId: string, containerId: string): Promise<void>;
  /** Starts a process in the running sidecar (see Runtime.spawn). */
  spawn(taskId: string, containerId: string, spec: SpawnSpec): Promise<Proc>;
  /** Maps a path inside the sidecar to this machine's, never outside its root. */
  resolvePath(taskId: string, containerId: string, path: string): string;
  /** The sidecar's root filesystem, for mounts and snapshots (see TaskFilesystem). */
  filesystem(taskId: string, containerId: string): TaskFilesystem;
}

/** Where the sidecars' own network policies are enforced (for the runc runtime: its TaskNetworks). */
export interface SidecarPolicies {
  /**
   * Enforces `policy` on the traffic of the processes of cgroup
   * `cgroupsPath` (made now when missing) in task `taskId`'s namespace,
   * before anything runs there; FailedPrecondition when the task has no
   * network of its own.
   */
  add(taskId: string, ctr: string, cgroupsPath: string, policy: NetworkPolicy): Promise<void>;
  /** Removes what `add` made for sidecar `ctr` (nothing when it made nothing). */
  remove(taskId: string, ctr: string): Promise<void>;
}
