import type { BinPath } from "./paths.ts";
import type { MountRoot } from "./resolve.ts";
import type { SnapshotProgress } from "./snapshot.ts";

/**
 * What the image service needs to know about a task's filesystem. The
 * daemon builds it from the task's runtime.
 */
export interface TaskFs extends MountRoot {
  /** Runtime name (mount records of "host" tasks end with the router). */
  runtime: string;
  /**
   * Maps the components of a request path to components below `root`, or
   * throws for a path the runtime keeps calls away from (host runtime:
   * anything outside the task's own directory). Absent: they are the same.
   */
  localPath?(components: readonly BinPath[]): BinPath[];
  /** Freezes every process of the task; resolves with the function that thaws them. */
  freeze?(): Promise<() => Promise<void>>;
  /** The task's root is an overlay over image `imageId` whose writable layer is `upper`. */
  rootLayers?: { imageId: string; upper: string };
}

/**
 * Finds a running task's filesystem, or with `containerId` that of one of
 * its sidecar containers: NotFound for an unknown task or container,
 * FailedPrecondition for one that is not running.
 */
export type TaskFsLookup = (taskId: string, containerId?: string) => TaskFs;

/**
 * Which container of the task a call addresses ("" or absent: the main
 * one; else a sidecar's `ctr-...` id), and the customer-supplied
 * encryption key it carries. The key (16-512
 * bytes, else InvalidArgument) seals a snapshot and opens a sealed image for
 * a mount (csek.ts, sealed-store.ts); it is held for the call only, never
 * stored, logged or echoed.
 */
export interface CallTarget {
  containerId?: string;
  encryptionKey?: Uint8Array | undefined;
}

export interface SnapshotRequest extends CallTarget {
  snapshotId?: string;
  ttlSeconds?: bigint | undefined;
  signal?: AbortSignal;
}

/** Progress of one snapshot, for a progress line (`done` on the last call). */
export interface SnapshotEvent extends SnapshotProgress {
  taskId: string;
  label: string;
  startedAt: number;
  done: boolean;
}
