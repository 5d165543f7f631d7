import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { AlreadyExistsError } from "../errors.ts";
import { checkMaxBytes, MAX, quote } from "../limits.ts";
import { writeFileAtomic } from "./fs-util.ts";

interface KeyRecord {
  imageId: string;
  /** What was snapshotted ("dir:<path b64>" or "fs"): reusing the id for another target conflicts. */
  target: string;
}

/**
 * Idempotency of snapshots: `snapshot_id` is a key scoped to its task. The
 * first snapshot under a key records its image in `<images>/keys/`; a later
 * request with the same task and key returns that image without capturing
 * again (while the image exists), or AlreadyExists when it names another
 * target. Concurrent requests with one key share one capture.
 */
export class SnapshotKeys {
  private readonly inflight = new Map<string, { target: string; result: Promise<string> }>();

  constructor(
    private readonly dir: string,
    private readonly tmpDir: string,
    private readonly exists: (imageId: string) => Promise<boolean>,
  ) {}

  private file(taskId: string, snapshotId: string): string {
    const h = createHash("sha256").update(`${taskId}\0${snapshotId}`).digest("hex");
    return join(this.dir, `${h}.json`);
  }

  /**
   * Runs `capture` unless `snapshotId` (non-empty) already produced an image
   * for `taskId`; returns the image id either way.
   */
  async once(
    taskId: string,
    snapshotId: string,
    target: string,
    capture: () => Promise<string>,
  ): Promise<string> {
    if (snapshotId === "") return capture();
    checkMaxBytes("snapshot_id", snapshotId, MAX.snapshotId);
    const file = this.file(taskId, snapshotId);
    const running = this.inflight.get(file);
    if (running) {
      this.check(snapshotId, running.target, target);
      return running.result;
    }
    const result = (async () => {
      const rec = await readFile(file, "utf8")
        .then((s) => JSON.parse(s) as KeyRecord)
        .catch(() => undefined);
      if (rec && (await this.exists(rec.imageId))) {
        this.check(snapshotId, rec.target, target);
        return rec.imageId;
      }
      const imageId = await capture();
      const out: KeyRecord = { imageId, target };
      await writeFileAtomic(file, Buffer.from(JSON.stringify(out)), this.tmpDir);
      return imageId;
    })();
    this.inflight.set(file, { target, result });
    try {
      return await result;
    } finally {
      this.inflight.delete(file);
    }
  }

  private check(snapshotId: string, had: string, want: string): void {
    if (had !== want) {
      throw new AlreadyExistsError(
        `snapshot_id ${quote(snapshotId)} was already used for another path of this task`,
      );
    }
  }
}
