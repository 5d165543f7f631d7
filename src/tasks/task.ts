import { stat } from "node:fs/promises";
import { join } from "node:path";
import { FailedPreconditionError, NotFoundError, ResourceExhaustedError } from "../errors.ts";
import { Exec, type ExecOptions, timeoutKillDelayMs } from "../exec/exec.ts";
import { describeExec, type ExecInfo } from "../exec/exec-info.ts";
import {
  type EnvSource,
  type ExecRequest,
  fingerprint,
  validateExecRequest,
} from "../exec/exec-request.ts";
import { ptyEnv } from "../exec/pty.ts";
import { quote } from "../limits.ts";
import { FS_TOOLS_IN_TASK } from "../runtime/native.ts";
import type { AdoptedProc, Runtime, TaskEnv, TaskSpec, TaskStatus } from "../runtime/runtime.ts";
import type { SecretResolver } from "../secrets/secret-store.ts";
import type { ExecPlace } from "./containers/container-views.ts";
import { TaskContainers } from "./containers/task-containers.ts";
import type { Entrypoint } from "./entrypoint.ts";
import { decodeExecRecord, encodeExecRecord } from "./exec-record.ts";
import { ExecTable } from "./exec-table.ts";
import { ADMIN_CALLER, assertSecretsGranted, type Caller } from "./grants.ts";
import type { Readiness } from "./readiness.ts";

export type TaskState = "running" | "terminated";

/** Limits and tunables of the exec engine, set by the daemon. */
export interface ExecLimits {
  memoryLimit: number;
  outputCap: number;
  drainGraceMs: number;
  retentionMs: number;
  maxExecsPerTask: number;
  spillDir: string;
  onError: (err: unknown) => void;
  /** Logs a warning (a task's state that could not be read back); unset: `onError`. */
  onWarn?: (msg: string) => void;
  /** Resolves `secret_ids` to env vars; without it every secret id is unknown (NotFound). */
  secrets?: SecretResolver;
  /** Execs may ask for `runtime_debug` (`serve --allow-runtime-debug`); PermissionDenied otherwise. */
  allowRuntimeDebug?: boolean;
  /** A PTY exec whose stdin stays idle this long is ended (`--pty-idle-timeout`); 0/unset: never. */
  ptyIdleTimeoutMs?: number;
  /** Bytes of each entrypoint stream kept (`--entrypoint-retain`); unset: the default. */
  entrypointRetain?: number;
}

let spillSeq = 0;
const MiB = 1024 * 1024;
/** ReadFile's limit in the filesystem helper (native/fs-tools.c, FS-TOOLS.md). */
const FS_TOOLS_READ_LIMIT = 5 * 1024 * MiB;

/**
 * A task: a place where commands run, with its table of execs.
 * Execs are kept until `retentionMs` after they end, or until the task is torn down.
 */
export class Task {
  state: TaskState = "running";
  /** Limits and network the task was created with (runc tasks). */
  spec: TaskSpec = {};
  /** Secrets every caller reaching the task may use (`task create --allow-secret`). */
  allowedSecrets: readonly string[] = [];
  /** Its readiness probe and state (`task create --readiness-probe`); undefined: none. */
  readiness: Readiness | undefined;
  /** Its main container and sidecars (TaskContainer* RPCs; `container_id` of execs). */
  readonly containers = new TaskContainers(this, (err) => this.limits.onError(err));
  /** Its main process (`task create -- CMD`); once it exited the task is stopped. */
  entrypoint: Entrypoint | undefined;
  /** Its execs by id (exec-table.ts). */
  private readonly execs: ExecTable;
  /**
   * Why the router could not load this task's state at its start (see
   * TaskFactory.loadAll): it is then stopped (no exec starts) until removed.
   */
  loadFailure: string | undefined;

  constructor(
    readonly id: string,
    readonly createdAt: number,
    readonly runtime: Runtime,
    readonly env: TaskEnv,
    private readonly limits: ExecLimits,
  ) {
    this.execs = new ExecTable(id, limits.retentionMs, (err) =>
      this.warn(`task ${id}: an ended exec could not be released: ${(err as Error).message}`),
    );
  }

  get execCount(): number {
    return this.execs.size;
  }

  listExecs(): Exec[] {
    return this.execs.list();
  }

  /** The exec `execId`, or NotFound. */
  exec(execId: string): Exec {
    return this.execs.get(execId);
  }

  /**
   * Starts a command, idempotently: the same `execId` with the same request
   * returns the existing exec; with a different one, AlreadyExists.
   */
  async start(req: ExecRequest, caller: Caller = ADMIN_CALLER): Promise<Exec> {
    const fp = fingerprint(req);
    const existing = this.execs.sameOrConflict(req.execId, fp);
    if (existing) return existing;
    const place = this.containers.place(req.containerId); // NotFound, or a sidecar that ended
    // Env sources override the runtime's base env; request-level vars (PTY TERM...) are set after.
    const env = { ...place.env.baseEnv, ...this.resolveEnv(req.envSources, caller) };
    if (req.pty) Object.assign(env, ptyEnv(req.pty));
    if (req.argv[0] === FS_TOOLS_IN_TASK && this.limits.outputCap < FS_TOOLS_READ_LIMIT + MiB) {
      // Below the helper's own read limit: it refuses (FileTooLarge) what the cap would stall.
      env.TASKROUTER_FS_READ_LIMIT = String(Math.max(0, this.limits.outputCap - MiB));
    }
    validateExecRequest(req, env, { allowRuntimeDebug: this.limits.allowRuntimeDebug });
    this.assertRunning();
    this.assertRuntimeRunning();
    const cwd = req.workdir ?? place.env.defaultWorkdir;
    const hostCwd = place.resolvePath(cwd);
    const st = await stat(hostCwd).catch(() => undefined);
    if (!st?.isDirectory()) {
      throw new FailedPreconditionError(
        `workdir ${quote(cwd, { ends: true })} ${st ? "is not a directory" : "does not exist"}`,
      );
    }
    // A concurrent identical start may have won while we awaited.
    const raced = this.execs.sameOrConflict(req.execId, fp);
    if (raced) return raced;
    this.assertRunning();
    const held = this.execs.taken;
    if (held >= this.limits.maxExecsPerTask) {
      throw new ResourceExhaustedError(
        `task ${this.id} holds ${held} execs, the limit (--max-execs-per-task)`,
      );
    }
    return this.execs.starting(req.execId, fp, this.launch(req, fp, env, cwd, place));
  }

  private async launch(
    req: ExecRequest,
    fp: string,
    env: Record<string, string>,
    cwd: string,
    place: ExecPlace,
  ): Promise<Exec> {
    // Counted from before the spawn: never later than the client's clock, which starts after it.
    const deadline = req.timeoutSecs
      ? Date.now() +
        Math.max(0, timeoutKillDelayMs(req.timeoutSecs) - (this.runtime.timeoutLeadMs ?? 0))
      : undefined;
    const startedAt = Date.now();
    const proc = await place.spawn({
      ...(deadline !== undefined ? { deadline } : {}),
      persist: { record: encodeExecRecord(req, fp, startedAt, deadline) },
      outputCap: this.limits.outputCap,
      drainGraceMs: this.limits.drainGraceMs,
      argv: req.argv,
      env,
      cwd,
      stdout: req.stdout === "pipe" ? "pipe" : "ignore",
      stderr:
        req.stderr === "pipe"
          ? "pipe"
          : req.stderr === "stdout" && req.stdout === "pipe"
            ? "stdout"
            : "ignore",
      ...(req.runtimeDebug ? { runtimeDebug: true } : {}),
      ...(req.pty ? { pty: { rows: req.pty.rows, cols: req.pty.cols } } : {}),
    });
    return this.hold(new Exec(req.execId, req, fp, proc, this.execOptions(deadline)));
  }

  private execOptions(deadline: number | undefined): ExecOptions {
    return {
      memoryLimit: this.limits.memoryLimit,
      outputCap: this.limits.outputCap,
      drainGraceMs: this.limits.drainGraceMs,
      spillPrefix: join(this.limits.spillDir, `${process.pid}-${++spillSeq}`),
      onError: this.limits.onError,
      ptyIdleTimeoutMs: this.limits.ptyIdleTimeoutMs ?? 0,
      ...(deadline !== undefined ? { deadline } : {}),
    };
  }

  private hold(exec: Exec): Exec {
    this.execs.hold(exec);
    // A start that passed its checks before the entrypoint exited ends with the others.
    if (this.entrypoint?.ended) exec.kill("SIGKILL", "task_terminated");
    return exec;
  }

  /**
   * Takes over the execs an earlier router started in this task and left
   * running or ended (Runtime.adopt): their output from offset 0, stdin by
   * offset, exit status, and exec ids (a retried start joins them). Records
   * that do not parse are released; those `claim` takes are left to it.
   */
  async adoptExecs(claim?: (a: AdoptedProc) => boolean): Promise<void> {
    for (const a of (await this.runtime.adopt?.(this.id)) ?? []) {
      if (claim?.(a)) continue;
      const rec = decodeExecRecord(a.record);
      if (!rec)
        this.warn(`task ${this.id}: a malformed exec record was skipped (its exec released)`);
      if (!rec || this.execs.has(rec.req.execId)) {
        await a.proc.release?.();
        continue;
      }
      const opts: ExecOptions = {
        ...this.execOptions(rec.deadline),
        adopted: {
          startedAt: rec.startedAt,
          stdin: a.stdin,
          ...(a.endedAt !== undefined ? { endedAt: a.endedAt } : {}),
        },
      };
      this.hold(new Exec(rec.req.execId, rec.req, rec.fingerprint, a.proc, opts));
    }
  }

  /**
   * The env vars of `sources`, layered in order (later wins), before
   * anything starts: PermissionDenied for a secret `caller` may not use (an
   * admin may use every secret, anyone else those granted to the task and to
   * them), checked for all sources first (so a denied name is never looked
   * up); then NotFound for an unknown secret id.
   */
  resolveEnv(sources: readonly EnvSource[], caller: Caller): Record<string, string> {
    assertSecretsGranted(this.id, this.allowedSecrets, caller, sources);
    // A Map, then fromEntries: a key like __proto__ stays plain data.
    const env = new Map<string, string>();
    for (const src of sources) {
      let pairs: Readonly<Record<string, string>>;
      if ("env" in src) pairs = src.env;
      else if (this.limits.secrets) pairs = this.limits.secrets.resolve([src.secretId]);
      else throw new NotFoundError(`secret ${quote(src.secretId)} not found`);
      for (const [k, v] of Object.entries(pairs)) env.set(k, v);
    }
    return Object.fromEntries(env);
  }

  /** Logs `msg` as a warning. */
  warn(msg: string): void {
    if (this.limits.onWarn) this.limits.onWarn(msg);
    else this.limits.onError(new Error(msg));
  }

  /** What the runtime sees of the task now (a runc task's container may have died). */
  runtimeStatus(): TaskStatus {
    if (this.state !== "running") return { state: "running" };
    if (this.loadFailure !== undefined) {
      return { state: "stopped", reason: `its state could not be loaded: ${this.loadFailure}` };
    }
    const ended = this.entrypoint?.stopStatus();
    if (ended) return ended;
    if (!this.runtime.status) return { state: "running" };
    return this.runtime.status(this.id);
  }

  /** The task was not terminated (checked again after every await of a start). */
  private assertRunning(): void {
    if (this.state !== "running") {
      throw new FailedPreconditionError(`task ${this.id} is not running (${this.state})`);
    }
  }

  /** The runtime's environment is alive (a runc task's container); checked once per start. */
  private assertRuntimeRunning(): void {
    const rs = this.runtimeStatus();
    if (rs.state !== "running") {
      throw new FailedPreconditionError(
        `task ${this.id} is not running (${this.entrypoint?.ended ? "" : "its container stopped: "}${rs.reason ?? "unknown"})`,
      );
    }
  }

  /**
   * Kills every exec's process group (SIGKILL), waits for the leaders to exit,
   * then drops all execs and their logs. The task stops accepting execs at once.
   * Returns the final description of every exec it dropped.
   */
  async teardown(): Promise<ExecInfo[]> {
    this.state = "terminated";
    this.execs.close();
    this.containers.close();
    await this.readiness?.stop();
    // Starts past their checks finish first: their processes are killed with the rest.
    await this.execs.startsSettled();
    const all = this.execs.list();
    for (const e of all) e.kill("SIGKILL", "task_terminated");
    await Promise.all([...all.map((e) => e.exited), this.entrypoint?.stop()]);
    const final = all.sort((a, b) => a.startedAt - b.startedAt).map(describeExec);
    await Promise.all(all.map((e) => this.execs.collect(e.id)));
    return final;
  }
}
