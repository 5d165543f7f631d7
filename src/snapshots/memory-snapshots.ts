import { randomBytes } from "node:crypto";
import { mkdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from "../errors.ts";
import { checkMaxBytes, MAX, quote } from "../limits.ts";
import type { TaskSpec } from "../runtime/runtime.ts";
import type { ReadinessProbe } from "../tasks/readiness.ts";
import type { Task } from "../tasks/task.ts";
import type { TaskManager } from "../tasks/task-manager.ts";
import { MAX_TIMER_MS } from "../util/long-timer.ts";
import {
  loadRecords,
  SNAPSHOT_ID,
  type SnapshotRecord,
  treeBytes,
  writeRecord,
} from "./snapshot-record.ts";

/** What memory snapshots need of the task manager: find, create (restore) and end tasks. */
export type SnapshotTasks = Pick<TaskManager, "get" | "create" | "terminate">;

/** Lifetime of a memory snapshot unless `serve --memory-snapshot-ttl` says otherwise. */
export const DEFAULT_MEMORY_SNAPSHOT_TTL_MS = 7 * 24 * 60 * 60 * 1000;

export interface MemorySnapshotOptions {
  /** How long a snapshot lives, from its creation (ms). */
  ttlMs: number;
  /** Errors no caller is waiting for (ending a snapshotted task, expiry). */
  onError: (err: unknown) => void;
}

/** What the restored task is made with besides the snapshot (CreateTaskRequest). */
export interface RestoreRequest {
  /** Must be unset (""): the task keeps the snapshot's runtime. */
  runtime?: string;
  /** Must be empty: the task keeps the snapshot's limits, network and image. */
  spec?: TaskSpec;
  allowedSecrets?: readonly string[];
  readinessProbe?: ReadinessProbe;
}

/**
 * Memory snapshots of tasks (TaskSnapshotMemory, PROTOCOL-LATER §5.7) and
 * their restore as new tasks, kept under `root` (`<data-dir>/memory-snapshots`).
 *
 * Contract:
 * - `snapshot(task, key)` checkpoints the running task through its runtime
 *   (Runtime.checkpoint), then ends the task. (task, key) names one
 *   snapshot: a repeated or concurrent call joins the attempt in flight or
 *   returns the finished id (also after a router restart); it never makes a
 *   second one. A failed attempt leaves nothing, and the task running
 *   (FailedPrecondition when its runtime cannot checkpoint, naming it).
 * - A snapshot lives `ttlMs` from its creation, then is deleted; restoring
 *   an unknown or expired one is NotFound and creates nothing.
 * - `restore` makes a new task from a snapshot; a snapshot can be restored
 *   any number of times, and is not deleted while a restore reads it.
 */
export class MemorySnapshots {
  private readonly records = new Map<string, SnapshotRecord>();
  /** Finished snapshot ids by (task, key), and the attempts in flight. */
  private readonly byKey = new Map<string, string>();
  private readonly inFlight = new Map<string, Promise<string>>();
  /** Tasks with a snapshot in flight (one at a time per task). */
  private readonly busy = new Set<string>();
  /** Restores reading each snapshot. */
  private readonly holds = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly root: string,
    private readonly tasks: SnapshotTasks,
    private readonly opts: MemorySnapshotOptions,
  ) {}

  /** Loads the snapshots of earlier routers (dropping unfinished ones) and deletes expired ones. */
  async load(): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    for (const rec of await loadRecords(this.root)) this.add(rec);
    await this.sweep();
  }

  /** Stops the expiry timer (router shutdown). */
  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Takes a memory snapshot of task `taskId`, once per `key` (see the class contract). */
  snapshot(taskId: string, key: string): Promise<string> {
    if (key === "") throw new InvalidArgumentError("idempotency_key must not be empty");
    checkMaxBytes("idempotency_key", key, MAX.snapshotId);
    const k = `${taskId}\0${key}`;
    const done = this.byKey.get(k);
    if (done !== undefined) return Promise.resolve(done);
    const running = this.inFlight.get(k);
    if (running) return running;
    const task = this.tasks.get(taskId); // NotFound; FailedPrecondition once terminated
    if (this.busy.has(taskId)) {
      throw new FailedPreconditionError(
        `a memory snapshot of task ${taskId} is under way (with another idempotency_key)`,
      );
    }
    const attempt = this.take(task, key).finally(() => {
      this.inFlight.delete(k);
      this.busy.delete(taskId);
    });
    this.inFlight.set(k, attempt);
    this.busy.add(taskId);
    return attempt;
  }

  private async take(task: Task, key: string): Promise<string> {
    const checkpoint = task.runtime.checkpoint?.bind(task.runtime);
    if (!checkpoint) {
      throw new FailedPreconditionError(
        `the ${task.runtime.name} runtime cannot take memory snapshots (its tasks are processes of this machine, with no checkpointable container): use the runc runtime with --oci-runtime runsc`,
      );
    }
    const rs = task.runtimeStatus();
    if (task.state !== "running" || rs.state !== "running") {
      throw new FailedPreconditionError(
        `task ${task.id} is not running${rs.reason ? ` (${rs.reason})` : ""}`,
      );
    }
    const id = `ms-${randomBytes(10).toString("hex")}`;
    const tmp = join(this.root, `${id}.tmp`);
    await mkdir(tmp, { mode: 0o700 });
    let rec: SnapshotRecord;
    try {
      const { format } = await checkpoint(task.id, join(tmp, "state"));
      const createdAt = Date.now();
      rec = {
        id,
        taskId: task.id,
        idempotencyKey: key,
        runtime: task.runtime.name,
        format,
        spec: task.spec,
        createdAt,
        expiresAt: createdAt + this.opts.ttlMs,
        bytes: await treeBytes(tmp),
      };
      await writeRecord(tmp, rec);
      await rename(tmp, join(this.root, id));
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
    this.add(rec);
    // The snapshot exists from here on; the task's processes are gone (checkpointed).
    await this.tasks.terminate(task.id).catch(this.opts.onError);
    return id;
  }

  private add(rec: SnapshotRecord): void {
    this.records.set(rec.id, rec);
    this.byKey.set(`${rec.taskId}\0${rec.idempotencyKey}`, rec.id);
    this.schedule();
  }

  /** The snapshots that have not expired, oldest first. */
  list(): SnapshotRecord[] {
    const now = Date.now();
    return [...this.records.values()]
      .filter((r) => r.expiresAt > now)
      .sort((a, b) => a.createdAt - b.createdAt);
  }

  /** The live snapshot `id`: NotFound when unknown or expired. */
  private live(id: string): SnapshotRecord {
    if (id === "") throw new InvalidArgumentError("snapshot id must not be empty");
    checkMaxBytes("snapshot id", id, MAX.snapshotId);
    const rec = SNAPSHOT_ID.test(id) ? this.records.get(id) : undefined;
    if (!rec || rec.expiresAt <= Date.now()) {
      throw new NotFoundError(`memory snapshot ${quote(id)} not found (unknown or expired)`);
    }
    return rec;
  }

  /**
   * Creates task `taskId` (empty: a generated id) from snapshot `id`: its
   * processes continue from their memory state, on the snapshot's runtime,
   * limits, network and image. NotFound for an unknown or expired snapshot
   * and InvalidArgument for a request that sets a runtime, limit, network or
   * image, before anything is made.
   */
  async restore(taskId: string, id: string, req: RestoreRequest = {}): Promise<Task> {
    const rec = this.live(id);
    if ((req.runtime ?? "") !== "" || Object.values(req.spec ?? {}).some((v) => v !== undefined)) {
      throw new InvalidArgumentError(
        "a task restored from a memory snapshot keeps the snapshot's runtime, limits, network and image: leave them unset",
      );
    }
    this.holds.set(id, (this.holds.get(id) ?? 0) + 1);
    try {
      return await this.tasks.create(taskId, {
        runtime: rec.runtime,
        spec: { ...rec.spec, memorySnapshot: id },
        restore: join(this.root, id, "state"),
        ...(req.allowedSecrets ? { allowedSecrets: req.allowedSecrets } : {}),
        ...(req.readinessProbe ? { readinessProbe: req.readinessProbe } : {}),
      });
    } finally {
      const n = (this.holds.get(id) ?? 1) - 1;
      if (n > 0) this.holds.set(id, n);
      else this.holds.delete(id);
      if (n <= 0 && rec.expiresAt <= Date.now()) void this.sweep();
    }
  }

  /**
   * Deletes snapshot `id`; false when there is none (safe to repeat).
   * FailedPrecondition while a restore reads it.
   */
  async delete(id: string): Promise<boolean> {
    if (id === "") throw new InvalidArgumentError("snapshot id must not be empty");
    checkMaxBytes("snapshot id", id, MAX.snapshotId);
    const rec = SNAPSHOT_ID.test(id) ? this.records.get(id) : undefined;
    if (!rec) return false;
    if (this.holds.has(id)) {
      throw new FailedPreconditionError(`memory snapshot ${id} is being restored`);
    }
    await this.remove(rec);
    return true;
  }

  private async remove(rec: SnapshotRecord): Promise<void> {
    this.records.delete(rec.id);
    const k = `${rec.taskId}\0${rec.idempotencyKey}`;
    if (this.byKey.get(k) === rec.id) this.byKey.delete(k);
    // Renamed first: a crash mid-way leaves a `.tmp` the next load removes.
    const gone = join(this.root, `${rec.id}.tmp`);
    await rename(join(this.root, rec.id), gone);
    await rm(gone, { recursive: true, force: true });
    this.schedule();
  }

  /** Deletes every expired snapshot no restore holds. */
  private async sweep(): Promise<void> {
    const now = Date.now();
    for (const rec of [...this.records.values()]) {
      if (rec.expiresAt > now || this.holds.has(rec.id)) continue;
      await this.remove(rec).catch(this.opts.onError);
    }
    this.schedule();
  }

  /** Arms the timer for the next expiry. */
  private schedule(): void {
    clearTimeout(this.timer);
    let next = Number.POSITIVE_INFINITY;
    for (const r of this.records.values())
      if (!this.holds.has(r.id)) next = Math.min(next, r.expiresAt);
    if (next === Number.POSITIVE_INFINITY) return;
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, next - Date.now()));
    this.timer = setTimeout(() => void this.sweep(), delay);
    this.timer.unref();
  }
}
