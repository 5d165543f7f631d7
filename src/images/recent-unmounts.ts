/**
 * Unmounts done lately, so that TaskUnmountDirectory is safe to replay. The
 * SDKs send the identical request again when its answer was lost on the way
 * (a transient code, PROTOCOL-LATER §5.1); by then nothing is mounted at the
 * path any more, and that replay must be answered OK as the first call was,
 * not NOT_FOUND. The request carries no id, so a replay is told from a new
 * call by what it names: the same task, container and path bytes as an
 * unmount done less than `windowMs` ago (docs/DECISIONS.md, "Replays of
 * TaskUnmountDirectory").
 *
 * Contract:
 * - `unmounted` records an unmount of `key` in `taskId`; `isReplay` is true
 *   while that record is younger than `windowMs`; `mounted` forgets it (a
 *   new mount at that path: the next unmount of it is a new one).
 * - Bounded: at most `perTask` records per task (the oldest go first), and
 *   `forgetTask` drops a task's records at its teardown.
 */
export class RecentUnmounts {
  private readonly byTask = new Map<string, Map<string, number>>();

  constructor(
    private readonly windowMs = 10 * 60_000,
    private readonly perTask = 64,
    private readonly now: () => number = Date.now,
  ) {}

  /** The key of an unmount request: its container and its path bytes exactly as sent. */
  static key(containerId: string | undefined, path: Uint8Array): string {
    return `${containerId ?? ""}\0${Buffer.from(path).toString("hex")}`;
  }

  unmounted(taskId: string, key: string): void {
    let recs = this.byTask.get(taskId);
    if (!recs) {
      recs = new Map();
      this.byTask.set(taskId, recs);
    }
    recs.delete(key); // re-inserted last: Map order is the age order
    recs.set(key, this.now());
    for (const oldest of recs.keys()) {
      if (recs.size <= this.perTask) break;
      recs.delete(oldest);
    }
  }

  isReplay(taskId: string, key: string): boolean {
    const at = this.byTask.get(taskId)?.get(key);
    return at !== undefined && this.now() - at < this.windowMs;
  }

  mounted(taskId: string, key: string): void {
    this.byTask.get(taskId)?.delete(key);
  }

  forgetTask(taskId: string): void {
    this.byTask.delete(taskId);
  }
}
