import { PassThrough } from "node:stream";
import { FailedPreconditionError, throwIfAborted } from "../errors.ts";
import type { StreamName } from "../exec/exec.ts";
import { StdinStream } from "../exec/stdin.ts";
import type { AdoptedProc, ExitStatus, Proc, TaskStatus } from "../runtime/runtime.ts";
import { Waiters } from "../util/waiters.ts";
import {
  type EntrypointLog,
  type OffsetChunk,
  RetainedFileLog,
  RingLog,
} from "./entrypoint-log.ts";
import {
  checkCanStart,
  type EntrypointRecord,
  type EntrypointSpec,
  saveEntrypointExit,
  specOfRecord,
} from "./entrypoint-spec.ts";
import type { ExecLimits, Task } from "./task.ts";

/** Bytes of each entrypoint stream kept by default (`serve --entrypoint-retain`). */
export const DEFAULT_ENTRYPOINT_RETAIN = 16 * 1024 * 1024;

/** PATH when the task's base env has none (the agent's default too). */
const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The agent record (SpawnSpec.persist) that marks a task's entrypoint among its execs. */
const RECORD = JSON.stringify({ v: 1, kind: "entrypoint" });

/** What starting or adopting an entrypoint needs of the router. */
export interface EntrypointDeps {
  dataDir: string;
  /** Bytes kept per stream (SpawnSpec.retain). */
  retain: number;
  drainGraceMs: number;
  onError: (err: unknown) => void;
}

/**
 * A task's main process (`task create -- CMD`, Modal's sandbox entrypoint):
 * its stdout and stderr with bounded retention (EntrypointLog), its stdin by
 * offset (the rules of TaskExecStdinWrite), its exit status. It is no exec
 * of the task: no exec id reaches it, `exec ls` does not show it, and the
 * per-exec output cap does not apply (retention bounds what is kept).
 *
 * When it exits the task ends (`endTask`): its execs are SIGKILLed (cause
 * task_terminated), new execs are refused (the task's runtime status is
 * "stopped", reason "entrypoint exited"), readiness stops, and the exit is
 * written to task.json; stdio stays readable until `task rm`.
 */
export class Entrypoint {
  status: ExitStatus | undefined;
  endedAt: number | undefined;
  readonly stdin: StdinStream;
  readonly exited: Promise<ExitStatus>;
  /** Resolves once the end of the task was carried out (see endTask). */
  settled: Promise<void> = Promise.resolve();
  private readonly logs: Record<StreamName, EntrypointLog>;
  /** Readers waiting for the exit (see `read`): woken once; an aborted one leaves nothing here. */
  private readonly exitWaiters = new Waiters();

  constructor(
    readonly spec: EntrypointSpec,
    private readonly proc: Proc,
    opts: { retain: number; drainGraceMs: number; stdin?: AdoptedProc["stdin"]; endedAt?: number },
  ) {
    const out = proc.output;
    this.logs = out
      ? { stdout: new RetainedFileLog(out.stdout), stderr: new RetainedFileLog(out.stderr) }
      : {
          stdout: new RingLog(proc.stdout, proc.exited, opts.retain, opts.drainGraceMs),
          stderr: new RingLog(proc.stderr, proc.exited, opts.retain, opts.drainGraceMs),
        };
    this.stdin = new StdinStream(proc.stdin, opts.stdin);
    this.exited = proc.exited.then((status) => {
      this.status = status;
      this.endedAt = opts.endedAt ?? Date.now();
      this.stdin.markExited();
      this.exitWaiters.wake();
      return status;
    });
  }

  get ended(): boolean {
    return this.status !== undefined;
  }

  /** What the task's runtime status becomes once the entrypoint exited; undefined before. */
  stopStatus(): TaskStatus | undefined {
    const s = this.status;
    if (!s) return undefined;
    const how = s.signal !== undefined ? `signal ${s.signal}` : `code ${s.code}`;
    return { state: "stopped", reason: `entrypoint exited (${how})` };
  }

  /**
   * The stream's bytes from `offset` on, each chunk with its absolute offset
   * (EntrypointLog); it ends once the stream ended AND the process exited
   * (§5.5), so a reader that saw the end sees the exit status too.
   */
  async *read(
    stream: StreamName,
    offset: number,
    signal?: AbortSignal,
  ): AsyncGenerator<OffsetChunk, void, undefined> {
    yield* this.logs[stream].read(offset, signal);
    while (!this.ended) {
      throwIfAborted(signal);
      await this.exitWaiters.wait(signal);
    }
  }

  /** SIGKILLs its process group (task removal, router shutdown), waits for the end, frees the logs. */
  async stop(): Promise<void> {
    if (!this.ended) this.proc.signalGroup("SIGKILL");
    await this.exited;
    await this.settled;
    await Promise.all([this.logs.stdout.dispose(), this.logs.stderr.dispose()]);
  }
}

/** The EntrypointDeps of a router with data dir `dataDir` and `limits`. */
export function entrypointDeps(dataDir: string, limits: ExecLimits): EntrypointDeps {
  return {
    dataDir,
    retain: limits.entrypointRetain ?? DEFAULT_ENTRYPOINT_RETAIN,
    drainGraceMs: limits.drainGraceMs,
    onError: limits.onError,
  };
}

/**
 * Adopts what an earlier router left running in `task` (Task.adoptExecs),
 * the entrypoint recorded as `rec` included (adoptEntrypoint).
 */
export async function adoptAll(
  task: Task,
  rec: EntrypointRecord | undefined,
  deps: EntrypointDeps,
): Promise<void> {
  let main: AdoptedProc | undefined;
  await task.adoptExecs((a) => {
    if (a.record !== RECORD) return false;
    if (main) void a.proc.release?.(); // one entrypoint per task: a second is stray
    main ??= a;
    return true;
  });
  if (rec || main) adoptEntrypoint(task, rec, main, deps);
}

/** The task's entrypoint; FailedPrecondition for a task created without one. */
export function entrypointOf(task: Task): Entrypoint {
  if (!task.entrypoint) {
    throw new FailedPreconditionError(
      `task ${task.id} has no entrypoint (create it with: task create -- CMD ARG...)`,
    );
  }
  return task.entrypoint;
}

/**
 * Starts `spec` as `task`'s entrypoint: checked first (FailedPrecondition
 * naming the reason for a program or workdir that cannot be used; nothing
 * starts), then spawned through the task's runtime (its agent where it has
 * one, so it outlives the router) with the task's base env.
 */
export async function startEntrypoint(
  task: Task,
  spec: EntrypointSpec,
  deps: EntrypointDeps,
): Promise<Entrypoint> {
  const cwd = spec.workdir ?? task.env.defaultWorkdir;
  const env = { ...task.env.baseEnv };
  await checkCanStart(task.runtime, task.id, spec.argv[0] ?? "", cwd, env.PATH ?? DEFAULT_PATH);
  const proc = await task.runtime.spawn(task.id, {
    argv: spec.argv,
    env,
    cwd,
    stdout: "pipe",
    stderr: "pipe",
    persist: { record: RECORD },
    retain: deps.retain,
    drainGraceMs: deps.drainGraceMs,
  });
  if (proc.pid === undefined && proc.startError !== undefined) {
    throw new FailedPreconditionError(`entrypoint cannot start: ${proc.startError}`);
  }
  return attach(task, new Entrypoint(spec, proc, deps), deps);
}

/**
 * Gives a task loaded from `rec` its entrypoint again: the adopted process
 * (running or ended, output in its files) when the runtime kept it; else
 * one that ended with the recorded exit, or, when none was recorded (it
 * died with a router that had no agent, e.g. runsc), as SIGKILLed. Such a
 * lost entrypoint has no output.
 */
function adoptEntrypoint(
  task: Task,
  rec: EntrypointRecord | undefined,
  adopted: AdoptedProc | undefined,
  deps: EntrypointDeps,
): void {
  const spec = specOfRecord(rec);
  if (!spec) {
    void adopted?.proc.release?.();
    return;
  }
  if (adopted) {
    const opts = {
      ...deps,
      stdin: adopted.stdin,
      ...(adopted.endedAt !== undefined ? { endedAt: adopted.endedAt } : {}),
    };
    attach(task, new Entrypoint(spec, adopted.proc, opts), deps);
    return;
  }
  const exit = rec?.exit ?? { status: { signal: 9 }, at: Date.now() };
  attach(task, new Entrypoint(spec, endedProc(exit.status), { ...deps, endedAt: exit.at }), deps);
}

/** A Proc that has already ended with `status` (an entrypoint whose process is gone). */
function endedProc(status: ExitStatus): Proc {
  const stdin = new PassThrough();
  stdin.resume();
  return {
    pid: undefined,
    stdin,
    stdout: null,
    stderr: null,
    exited: Promise.resolve(status),
    startError: undefined,
    signalGroup() {},
  };
}

function attach(task: Task, ep: Entrypoint, deps: EntrypointDeps): Entrypoint {
  task.entrypoint = ep;
  ep.settled = ep.exited.then((status) =>
    endTask(task, { status, at: ep.endedAt ?? Date.now() }, deps).catch(deps.onError),
  );
  return ep;
}

/** The entrypoint exited: the task ends (see Entrypoint). */
async function endTask(
  task: Task,
  exit: { status: ExitStatus; at: number },
  deps: EntrypointDeps,
): Promise<void> {
  await saveEntrypointExit(deps.dataDir, task.id, exit);
  if (task.state !== "running") return; // torn down already: its execs went with it
  for (const e of task.listExecs()) if (e.running) e.kill("SIGKILL", "task_terminated");
  // The sandbox is over: its sidecars end with it (their results stay listed).
  for (const c of task.containers.list(false)) {
    if (c.id !== "") await task.containers.terminate(c.id).catch(deps.onError);
  }
  await task.readiness?.stop();
}
