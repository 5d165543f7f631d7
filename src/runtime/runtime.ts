import type { Readable, Writable } from "node:stream";
import type { SidecarRuntime } from "./sidecars.ts";

/** How a process ended: exactly one of `code` (normal exit) or `signal` (number). */
export type ExitStatus = { code: number; signal?: never } | { signal: number; code?: never };

/** What to run. `argv[0]` is looked up in the PATH of `env`. */
export interface SpawnSpec {
  argv: string[];
  /** The complete environment of the process (nothing is inherited from the router). */
  env: Record<string, string>;
  /** Working directory: a path inside the task. */
  cwd: string;
  /** stdout: a pipe the router reads, or discarded. */
  stdout: "pipe" | "ignore";
  /** stderr: a pipe, discarded, or written into the stdout pipe in write order. */
  stderr: "pipe" | "ignore" | "stdout";
  /**
   * Run on a new pseudo-terminal of this size instead of pipes: all terminal
   * output comes on `Proc.stdout`, `Proc.stderr` is null, `Proc.stdin` writes
   * to the terminal, and `Proc.resize` changes its size.
   */
  pty?: { rows: number; cols: number };
  /**
   * Wall-clock time (ms since the epoch) at which the process group is to be
   * SIGKILLed (an exec's timeout). Runtimes that can do it inside the task
   * (no round trip, so no later than this) do; the caller kills it anyway.
   */
  deadline?: number;
  /** Grant debugging powers (ptrace) to this process only (`runtime_debug`). */
  runtimeDebug?: boolean;
  /**
   * Runtimes whose processes outlive the router (`Runtime.adopt`) keep
   * `record` (the caller's description of the exec, opaque to the runtime)
   * with the process and hand it back on adoption. Absent: not kept.
   */
  persist?: { record: string };
  /**
   * Limits of runtimes that write output into files themselves
   * (`Proc.output`): bytes kept over both streams (past it the process is
   * no longer read, so it blocks), and the grace after the leader's exit
   * for descendants holding an output pipe (see ExecOptions).
   */
  outputCap?: number;
  drainGraceMs?: number;
  /**
   * Retention instead of a cap (a task's entrypoint, which must never block
   * on its output): each stream keeps at least its newest `retain` bytes and
   * older ones may be freed; `outputCap` is then ignored. Runtimes that write
   * output into files (`Proc.output`) provide `OutputFile.keptFrom`; for
   * pipes the caller bounds what it keeps.
   */
  retain?: number;
}

/**
 * An output stream that a runtime writes into a file of its own (a task
 * agent's log), never through the router's memory. Bytes [0, length) of
 * `path` are final; the file never shrinks while the process is held.
 */
export interface OutputFile {
  readonly path: string;
  readonly length: number;
  /** No byte will follow `length`. */
  readonly ended: boolean;
  /** Resolves at the next change of `length` or `ended`, or when `signal` aborts. */
  changed(signal?: AbortSignal): Promise<void>;
  /**
   * With SpawnSpec.retain: the offset of the oldest byte still kept (the
   * bytes of `path` below it may read as zeros). Ask again AFTER reading
   * bytes: those below the answer may have been freed while they were read.
   */
  keptFrom(): Promise<number>;
}

/** Both output streams of a process that writes them to files (Proc.output). */
export interface ProcOutput {
  readonly stdout: OutputFile;
  readonly stderr: OutputFile;
}

/** Where a process's stdin stood when it was adopted (see Runtime.adopt). */
export interface StdinState {
  /** Bytes taken so far: the next offset. */
  written: number;
  /** EOF was sent. */
  closed: boolean;
}

/** A process an earlier router started that this one adopted (Runtime.adopt). */
export interface AdoptedProc {
  /** SpawnSpec.persist.record, as the earlier router gave it. */
  readonly record: string;
  readonly proc: Proc;
  readonly stdin: StdinState;
  /** When it ended (ms since the epoch), when it had ended before the adoption. */
  readonly endedAt?: number;
}

/**
 * A process started by a runtime, leader of its own process group.
 *
 * Contract:
 * - `stdin` is always a pipe; `stdout`/`stderr` are pipes when the spec asked
 *   for them, otherwise null.
 * - `exited` resolves exactly once with the leader's exit status; it never
 *   rejects. A program that cannot be started resolves with code 127 (not
 *   found) or 126 (not executable) after `startError` was set to a one-line
 *   reason, the way a shell reports it.
 * - `signalGroup` sends a signal to the whole process group (the leader and
 *   every descendant that stayed in the group); it never throws, also after
 *   the group is gone.
 */
export interface Proc {
  readonly pid: number | undefined;
  readonly stdin: Writable;
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
  readonly exited: Promise<ExitStatus>;
  readonly startError: string | undefined;
  signalGroup(signal: NodeJS.Signals | number): void;
  /** Resizes the terminal of a PTY process (absent for pipe processes). */
  resize?(rows: number, cols: number): void;
  /**
   * True when the kernel's OOM killer ended the process (set before `exited`
   * resolves; absent or false otherwise, also for runtimes that cannot tell).
   */
  readonly oomKilled?: boolean;
  /**
   * Present when the runtime writes the output into files itself: then
   * `stdout` and `stderr` are null and the bytes are read from here (the
   * runtime enforces SpawnSpec.outputCap and drainGraceMs).
   */
  readonly output?: ProcOutput;
  /**
   * Frees what the runtime keeps of an ended process (its output files and
   * record); called once the caller no longer reads it. Absent: nothing kept.
   */
  release?(): Promise<void>;
}

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

/** A volume directory of this machine bind-mounted into a task (src/volumes/). */
export interface VolumeBind {
  /** The volume's name (kept for listings; the runtime mounts `source`). */
  name: string;
  /** Its directory on this machine. */
  source: string;
  /** Where the task sees it: an absolute, normalized path, checked already. */
  path: string;
  readOnly: boolean;
}

/**
 * A task's outbound allowlist (TaskSetNetworkAccess), resolved: what a
 * runtime enforces. Everything it does not allow is blocked, loopback excepted.
 */
export interface NetworkPolicy {
  /** Allowed destinations: normalized CIDRs (IPv4 and IPv6). */
  cidrs: string[];
  /** Allowed domains and the addresses each resolved to when the policy was set. */
  domains: { name: string; addresses: string[] }[];
  /** Nameservers the task may query on port 53 (those of this machine when there are domains). */
  nameservers: string[];
  /** When it was set, ms since the epoch. */
  setAt: number;
}

/** An "open" task's own network: its address and policy. */
export interface TaskNetworkInfo {
  /** The task's IPv4 address (its veth end). */
  address: string;
  /** The gateway: this machine's end of the veth. */
  gateway: string;
  /** undefined: open (no policy set). */
  policy: NetworkPolicy | undefined;
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
 * What a runtime offers of a task's own root filesystem to the rest of the
 * router (the image service's TaskMountDirectory and snapshots, wired in
 * daemon.ts). Runtimes whose tasks have no root of their own (host: its
 * commands see this whole machine) offer none. Everything here is about a
 * running task.
 */
export interface TaskFilesystem {
  /**
   * The host path of the task's root filesystem: the task's `/`. Mounts made
   * below it show in the task (the runtime propagates them, or `exposeMount`
   * places them).
   */
  readonly root: string;
  /** The task's cgroup (an OCI cgroupsPath), frozen during snapshots; absent: none. */
  readonly cgroupsPath?: string;
  /**
   * Present when the root is an overlay over stored image `imageId` with the
   * task's writes in host directory `upper` (a snapshot then stores only
   * what the task changed).
   */
  readonly rootLayers?: { readonly imageId: string; readonly upper: string };
  /**
   * Makes a mount made below `root` visible in the running task when the
   * runtime did not propagate it: `hostPath` is its root directory, `dev`
   * and `ino` identify that directory (it is the task's to replace).
   * Absent: nothing to do.
   */
  exposeMount?(hostPath: string, rootDir: { dev: number; ino: number }): Promise<void>;
  /**
   * Removes from the running task what is left of a mount of device `dev`
   * that the router detached below `root`. Absent: nothing to do.
   */
  hideMount?(dev: number): Promise<void>;
}

/**
 * Finds stored image `imageId` (NotFound when absent) and holds it until
 * `release`: `dir` is its unpacked tree, never written. `existing`: for a
 * task created by an earlier router (an expired image still on disk is fine).
 * The image service provides it (`ImageService.acquireUnpacked`).
 */
export type ImageResolver = (
  imageId: string,
  opts: { existing: boolean },
) => Promise<{ dir: string; release: () => void }>;

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
