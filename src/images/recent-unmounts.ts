import { createHash } from "node:crypto";
import type { BinPath } from "./paths.ts";

/**
 * Unmounts done lately, so that TaskUnmountDirectory is safe to replay. The
 * SDKs send the identical request again when its answer was lost on the way
 * (a transient code, PROTOCOL-LATER §5.1); by then nothing is mounted at the
 * path any more, and that replay must be answered OK as the first call was,
 * not NOT_FOUND. The request carries no id, so a replay is told from a new
 * call by what it names: the same task, container and path as an unmount
 * done less than `windowMs` ago (docs/DECISIONS.md, "Replays of
 * TaskUnmountDirectory"). Kept in memory only: a router that restarts
 * answers a replay of an unmount done before the restart NOT_FOUND.
 */
export class RecentUnmounts {
  /** Per task: key → when it was unmounted (Map order is the age order). */
  private readonly byTask = new Map<string, Map<string, number>>();

  /**
   * `windowMs`: how long an unmount counts as recent (the SDKs' retries of one call end
   * within seconds). `perTask`: the most records one task keeps (the oldest go first).
   */
  constructor(
    private readonly windowMs = 2 * 60_000,
    private readonly perTask = 64,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * The key of an unmount request: its container and its path as the router resolves it
   * (components after parsing: `/a`, `/a/` and `//a` are one path), hashed to a fixed size.
   */
  static key(containerId: string | undefined, components: readonly BinPath[]): string {
    const h = createHash("sha256").update(containerId ?? "", "latin1");
    for (const c of components) h.update("\0").update(c, "latin1");
    return h.digest("base64url");
  }

  /** Records an unmount of `key` in `taskId`, done now. */
  unmounted(taskId: string, key: string): void {
    let recs = this.byTask.get(taskId);
    if (!recs) {
      recs = new Map();
      this.byTask.set(taskId, recs);
    }
    recs.delete(key); // re-inserted last: the newest
    recs.set(key, this.now());
    for (const oldest of recs.keys()) {
      if (recs.size <= this.perTask) break;
      recs.delete(oldest);
    }
  }

  /** Whether an unmount of `key` in `taskId` was recorded less than `windowMs` ago. */
  isReplay(taskId: string, key: string): boolean {
    const at = this.byTask.get(taskId)?.get(key);
    return at !== undefined && this.now() - at < this.windowMs;
  }

  /** Forgets the unmount of `key` (a mount is being made there: the next unmount is a new one). */
  mounted(taskId: string, key: string): void {
    this.byTask.get(taskId)?.delete(key);
  }

  /** Forgets every record of `taskId` (its teardown). */
  forgetTask(taskId: string): void {
    this.byTask.delete(taskId);
  }
}
