import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { TaskSpec } from "../runtime/runtime.ts";
import type { EntrypointRecord } from "./entrypoint-spec.ts";
import type { ReadinessProbe } from "./readiness.ts";

/** What `<dataDir>/tasks/<id>/task.json` keeps of a task (so it survives a router restart). */
export interface TaskRecord {
  id: string;
  runtime: string;
  createdAt: number;
  /** Limits, network, image and volumes (runc tasks; `spec.volumes`: what it mounts); absent: none. */
  spec?: TaskSpec;
  /** Secrets the task's execs may use (`task create --allow-secret`); absent: none. */
  allowedSecrets?: string[];
  /** Its readiness probe, and when it first succeeded (ms since the epoch); absent: no probe. */
  readiness?: { probe: ReadinessProbe; readyAt?: number };
  /** Its main process (`task create -- CMD`) and, once it exited, how; absent: none. */
  entrypoint?: EntrypointRecord;
}

function recordFile(dataDir: string, id: string): string {
  return join(dataDir, "tasks", id, "task.json");
}

/** The record of task dir `name`, or undefined when it is missing or does not parse. */
export async function readTaskRecord(
  dataDir: string,
  name: string,
): Promise<TaskRecord | undefined> {
  return readFile(recordFile(dataDir, name), "utf8")
    .then((s) => JSON.parse(s) as TaskRecord)
    .catch(() => undefined);
}

/** Writes `rec` atomically (temp file, rename), making the task's dir unless `existing`. */
export async function writeTaskRecord(
  dataDir: string,
  rec: TaskRecord,
  opts: { existing?: boolean } = {},
): Promise<void> {
  const file = recordFile(dataDir, rec.id);
  if (!opts.existing) await mkdir(join(dataDir, "tasks", rec.id), { recursive: true });
  await writeFile(`${file}.tmp`, JSON.stringify(rec));
  await rename(`${file}.tmp`, file);
}

/**
 * Records that task `id` became ready at `readyAt`. Does nothing (and never
 * recreates the dir) once the task was removed.
 */
export async function saveReadyAt(dataDir: string, id: string, readyAt: number): Promise<void> {
  const rec = await readTaskRecord(dataDir, id);
  if (!rec?.readiness) return;
  rec.readiness.readyAt = readyAt;
  await writeTaskRecord(dataDir, rec, { existing: true }).catch(() => undefined);
}
