import { lstat, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { TaskSpec } from "../runtime/runtime.ts";

/** Memory snapshot ids: "ms-" and 20 hex digits; nothing else ever names a directory. */
export const SNAPSHOT_ID = /^ms-[0-9a-f]{20}$/;

/**
 * What `<root>/<id>/meta.json` keeps of a finished memory snapshot, so it
 * (and its idempotency key) survives a router restart. The runtime's
 * checkpoint is in `<root>/<id>/state/`.
 */
export interface SnapshotRecord {
  id: string;
  /** The task it was taken of, and the client's key: (taskId, key) names one snapshot. */
  taskId: string;
  idempotencyKey: string;
  /** The task's runtime ("runc") and the checkpoint's format (the OCI runtime, "runsc"). */
  runtime: string;
  format: string;
  /** The task's limits, network and image: the restored task gets them. */
  spec: TaskSpec;
  /** Milliseconds since the epoch. */
  createdAt: number;
  expiresAt: number;
  /** Bytes of its files. */
  bytes: number;
}

export function metaFile(root: string, id: string): string {
  return join(root, id, "meta.json");
}

export async function writeRecord(dir: string, rec: SnapshotRecord): Promise<void> {
  await writeFile(join(dir, "meta.json"), JSON.stringify(rec), { mode: 0o600 });
}

/**
 * The finished snapshots under `root`. Everything else of ours there is
 * removed: directories of snapshots that never finished (`<id>.tmp`, a
 * router that stopped mid-way) and ones whose record does not parse.
 */
export async function loadRecords(root: string): Promise<SnapshotRecord[]> {
  const out: SnapshotRecord[] = [];
  for (const name of await readdir(root)) {
    const id = name.endsWith(".tmp") ? name.slice(0, -4) : name;
    if (!SNAPSHOT_ID.test(id)) continue;
    const rec = id === name ? await readRecord(root, id) : undefined;
    if (rec) out.push(rec);
    else await rm(join(root, name), { recursive: true, force: true });
  }
  return out.sort((a, b) => a.createdAt - b.createdAt);
}

async function readRecord(root: string, id: string): Promise<SnapshotRecord | undefined> {
  try {
    const r = JSON.parse(await readFile(metaFile(root, id), "utf8")) as SnapshotRecord;
    const ok =
      r.id === id &&
      typeof r.taskId === "string" &&
      typeof r.idempotencyKey === "string" &&
      typeof r.runtime === "string" &&
      typeof r.format === "string" &&
      typeof r.spec === "object" &&
      r.spec !== null &&
      Number.isFinite(r.createdAt) &&
      Number.isFinite(r.expiresAt) &&
      Number.isFinite(r.bytes);
    return ok ? r : undefined;
  } catch {
    return undefined;
  }
}

/** Bytes of the regular files under `dir` (symlinks not followed). */
export async function treeBytes(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n += await treeBytes(p);
    else if (e.isFile()) n += (await lstat(p)).size;
  }
  return n;
}
