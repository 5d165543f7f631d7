import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { FailedPreconditionError, NotFoundError } from "../errors.ts";
import { quote } from "../limits.ts";
import { fsyncDir, writeFileAtomic } from "../util/atomic-file.ts";
import { SerialQueue } from "../util/serial-queue.ts";
import type { VolumeBackend, VolumeDirId } from "./backend.ts";
import { checkVolumeName, VOLUME_NAME } from "./validate.ts";

/** What may be said about a volume. */
export interface VolumeInfo {
  name: string;
  /** Milliseconds since the Unix epoch. */
  createdAt: number;
  /** Bytes its files take on disk now. */
  sizeBytes: number;
  /** Ids of the tasks that mount it (a sidecar's mount counts for its task), sorted. */
  mountedBy: string[];
}

/** On-disk record of a volume (`<dir>/records/<name>.json`). */
interface VolumeRecord {
  name: string;
  createdAt: number;
  backend: string;
  dir: VolumeDirId;
}

const SUFFIX = ".json";
const TMP_PREFIX = ".tmp-";

/**
 * The router's named volumes: one record per volume in `<dir>/records/`
 * (written atomically: temp file, fsync, rename, fsync of the directory),
 * their files in the backend, and which tasks mount each one (in memory:
 * the task manager holds them again when it loads its tasks after a
 * restart). A holder is a task id, or `<task id>+<container id>` for a
 * task's sidecar (sidecarHolder); `release` of a task lets its sidecars'
 * holds go too. Mutations run one at a time; `hold` is synchronous, so a
 * volume being removed is never handed to a new task.
 *
 * Errors: bad names → InvalidArgument; unknown volumes → NotFound; removing
 * a volume a task mounts → FailedPrecondition (naming the tasks).
 */
export class VolumeStore {
  private readonly volumes = new Map<string, VolumeRecord>();
  /** Volume name → ids of the tasks that mount it. */
  private readonly users = new Map<string, Set<string>>();
  private readonly queue = new SerialQueue();

  private constructor(
    private readonly records: string,
    readonly backend: VolumeBackend,
  ) {}

  /**
   * Opens (creating) the store in `dir` with `backend` and loads its records;
   * files that are not valid records are skipped and reported to `warn`.
   * Files of volumes without a record (a create or delete cut short) go.
   */
  static async open(
    dir: string,
    backend: VolumeBackend,
    warn: (msg: string) => void = () => {},
  ): Promise<VolumeStore> {
    const records = join(dir, "records");
    await mkdir(records, { recursive: true, mode: 0o700 });
    const store = new VolumeStore(records, backend);
    for (const file of await readdir(records)) {
      const path = join(records, file);
      if (file.startsWith(TMP_PREFIX)) {
        await rm(path, { force: true });
        continue;
      }
      const name = file.endsWith(SUFFIX) ? file.slice(0, -SUFFIX.length) : "";
      const rec = VOLUME_NAME.test(name) ? await readRecord(path, name) : undefined;
      if (!rec || rec.backend !== backend.kind) {
        warn(`volumes: ignoring ${path}: not a valid ${backend.kind} volume record`);
        continue;
      }
      store.volumes.set(name, rec);
    }
    await backend.prune(new Set(store.volumes.keys()));
    return store;
  }

  /** Creates volume `name` (empty); `created` is false when it existed (nothing changes). */
  async create(name: string): Promise<{ info: VolumeInfo; created: boolean }> {
    checkVolumeName(name);
    return this.serialized(async () => {
      if (this.volumes.has(name)) return { info: await this.info(name), created: false };
      const dir = await this.backend.create(name);
      const rec: VolumeRecord = { name, createdAt: Date.now(), backend: this.backend.kind, dir };
      try {
        await this.write(rec);
      } catch (err) {
        await this.backend.remove(name).catch(() => undefined);
        throw err;
      }
      this.volumes.set(name, rec);
      return { info: await this.info(name), created: true };
    });
  }

  /** Every volume, sorted by name, with its size and the tasks that mount it. */
  async list(): Promise<VolumeInfo[]> {
    const names = [...this.volumes.keys()].sort();
    const out: VolumeInfo[] = [];
    for (const name of names) if (this.volumes.has(name)) out.push(await this.info(name));
    return out;
  }

  /** Removes volume `name` and its files: NotFound when unknown, FailedPrecondition while mounted. */
  async delete(name: string): Promise<void> {
    checkVolumeName(name);
    return this.serialized(async () => {
      if (!this.volumes.has(name)) throw new NotFoundError(`volume ${quote(name)} not found`);
      const users = [...(this.users.get(name) ?? [])].sort().map(describeHolder);
      if (users.length > 0) {
        throw new FailedPreconditionError(
          `volume ${name} is mounted by ${users.join(", ")} (${users.length > 1 ? "end them" : "end it"} first)`,
        );
      }
      // Gone from here on (no task can hold it); the record first, then the files.
      const rec = this.volumes.get(name) as VolumeRecord;
      this.volumes.delete(name);
      try {
        await rm(this.recordFile(name), { force: true });
      } catch (err) {
        this.volumes.set(name, rec); // still there: nothing changed
        throw err;
      }
      await fsyncDir(this.records);
      await this.backend.remove(name);
    });
  }

  /**
   * Holds volumes `names` for `holder` (a task id, or a sidecar's
   * `<task id>+<container id>`; they cannot be removed until `release`),
   * all or none: NotFound (naming the first unknown one), and nothing held.
   * Returns each one's host directory, in order.
   */
  hold(holder: string, names: readonly string[]): string[] {
    for (const name of names) {
      if (!this.volumes.has(name)) throw new NotFoundError(`volume ${quote(name)} not found`);
    }
    return names.map((name) => {
      this.usersOf(name).add(holder);
      return this.backend.hostDir(name);
    });
  }

  /**
   * Holds again, for a task (or sidecar) an earlier router created (its
   * record names them), the volumes that still exist; returns the names
   * that do not.
   */
  adopt(holder: string, names: readonly string[]): string[] {
    const missing = names.filter((n) => !this.volumes.has(n));
    this.hold(
      holder,
      names.filter((n) => this.volumes.has(n)),
    );
    return missing;
  }

  /** The host directory tasks bind-mount for volume `name`. */
  hostDir(name: string): string {
    return this.backend.hostDir(name);
  }

  /**
   * Lets every volume `holder` holds go, and those of the holders below it:
   * a task id releases the task's sidecars too (the task was terminated); a
   * sidecar's holder only the sidecar's (it ended).
   */
  release(holder: string): void {
    for (const [name, users] of this.users) {
      for (const u of users) if (u === holder || u.startsWith(`${holder}+`)) users.delete(u);
      if (users.size === 0) this.users.delete(name);
    }
  }

  /**
   * Brings what tasks see of volume `name` up to its latest state (the
   * backend's `reload`): NotFound when it is gone, FailedPrecondition when
   * the backend cannot.
   */
  async reload(name: string): Promise<void> {
    const rec = this.volumes.get(name);
    if (!rec) throw new NotFoundError(`volume ${quote(name)} not found`);
    await this.backend.reload(name, rec.dir);
  }

  private usersOf(name: string): Set<string> {
    let s = this.users.get(name);
    if (!s) {
      s = new Set();
      this.users.set(name, s);
    }
    return s;
  }

  /** The tasks that mount `name`: a sidecar's mount counts for its task. */
  private mountedBy(name: string): string[] {
    const tasks = [...(this.users.get(name) ?? [])].map((u) => u.split("+")[0] as string);
    return [...new Set(tasks)].sort();
  }

  private async info(name: string): Promise<VolumeInfo> {
    const rec = this.volumes.get(name) as VolumeRecord;
    return {
      name,
      createdAt: rec.createdAt,
      sizeBytes: await this.backend.size(name),
      mountedBy: this.mountedBy(name),
    };
  }

  private recordFile(name: string): string {
    return join(this.records, `${name}${SUFFIX}`);
  }

  private async write(rec: VolumeRecord): Promise<void> {
    await writeFileAtomic(this.recordFile(rec.name), JSON.stringify(rec), this.records, {
      mode: 0o600,
      tmpPrefix: TMP_PREFIX,
    });
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.run(fn);
  }
}

/** "task T" or "task T (its sidecar C)", for people. */
function describeHolder(holder: string): string {
  const [task, ctr] = holder.split("+");
  return ctr === undefined ? `task ${task}` : `task ${task} (its sidecar ${ctr})`;
}

async function readRecord(path: string, name: string): Promise<VolumeRecord | undefined> {
  try {
    const r = JSON.parse(await readFile(path, "utf8")) as Partial<VolumeRecord>;
    const dir = r.dir;
    if (r.name !== name || typeof r.createdAt !== "number" || typeof r.backend !== "string") {
      return undefined;
    }
    if (typeof dir?.dev !== "number" || typeof dir.ino !== "number") return undefined;
    return {
      name,
      createdAt: r.createdAt,
      backend: r.backend,
      dir: { dev: dir.dev, ino: dir.ino },
    };
  } catch {
    return undefined;
  }
}
