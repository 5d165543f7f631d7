import { chmod, mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { AlreadyExistsError, InvalidArgumentError, NotFoundError } from "../errors.ts";
import { quote } from "../limits.ts";
import { fsyncDir, writeFileAtomic } from "../util/atomic-file.ts";
import { SerialQueue } from "../util/serial-queue.ts";
import { checkSecretData, checkSecretName, SECRET_NAME } from "./validate.ts";

/** What may be said about a secret: never its values. */
export interface SecretInfo {
  name: string;
  /** Sorted key names. */
  keys: string[];
  /** Milliseconds since the Unix epoch. */
  createdAt: number;
  updatedAt: number;
}

/**
 * Turns `secret_ids` into environment variables (what a task needs of the store).
 *
 * Contract: `resolve` is synchronous and changes nothing. Every id must name a
 * secret: an empty id is InvalidArgument, an unknown one NotFound (naming the
 * id). The result holds every pair of every secret; where several secrets set
 * one key, the later id in the list wins. No error ever carries a value.
 */
export interface SecretResolver {
  resolve(ids: readonly string[]): Record<string, string>;
}

interface Secret {
  name: string;
  createdAt: number;
  updatedAt: number;
  data: Map<string, string>;
}

/** On-disk form of a secret (`<dir>/<name>.json`, mode 0600). */
interface SecretFile {
  name: string;
  createdAt: number;
  updatedAt: number;
  data: Record<string, string>;
}

const FILE_SUFFIX = ".json";
const TMP_PREFIX = ".tmp-";

/**
 * The router's secrets: one JSON file per secret in `dir` (mode 0700; files
 * 0600), written atomically (temp file, fsync, rename, fsync of the directory),
 * and a copy in memory that `resolve` reads. Mutations run one at a time.
 *
 * Errors: bad names or data → InvalidArgument (messages name secrets and keys,
 * never values); creating a secret that exists with other data without
 * `overwrite` → AlreadyExists. Creating it again with the same data and
 * deleting a secret that is gone both succeed, so every call is safe to repeat.
 */
export class SecretStore implements SecretResolver {
  private readonly secrets = new Map<string, Secret>();
  private readonly queue = new SerialQueue();

  private constructor(readonly dir: string) {}

  /**
   * Opens (creating) the store in `dir` and loads its secrets. Files that are
   * not valid secrets are skipped and reported to `warn` by file name only.
   */
  static async open(dir: string, warn: (msg: string) => void = () => {}): Promise<SecretStore> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await chmod(dir, 0o700);
    const store = new SecretStore(dir);
    for (const file of await readdir(dir)) {
      const path = join(dir, file);
      if (file.startsWith(TMP_PREFIX)) {
        await rm(path, { force: true });
        continue;
      }
      const name = file.endsWith(FILE_SUFFIX) ? file.slice(0, -FILE_SUFFIX.length) : "";
      const secret = SECRET_NAME.test(name) ? await readSecret(path, name) : undefined;
      if (!secret) {
        // Never log the error itself: a JSON parse error quotes the file's text.
        warn(`secrets: ignoring ${path}: not a valid secret file`);
        continue;
      }
      await chmod(path, 0o600);
      store.secrets.set(name, secret);
    }
    return store;
  }

  /**
   * Creates secret `name` with `data`, or replaces its data when `overwrite`.
   * Returns its info and whether anything changed (false: it already held
   * exactly this data).
   */
  async create(
    name: string,
    data: ReadonlyMap<string, string>,
    opts: { overwrite?: boolean } = {},
  ): Promise<{ info: SecretInfo; changed: boolean }> {
    checkSecretName(name);
    checkSecretData(name, data);
    const copy = new Map([...data].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    return this.serialized(async () => {
      const old = this.secrets.get(name);
      if (old && sameData(old.data, copy)) return { info: infoOf(old), changed: false };
      if (old && !opts.overwrite) {
        throw new AlreadyExistsError(
          `secret ${name} already exists with other data (overwrite replaces it)`,
        );
      }
      const now = Date.now();
      const secret: Secret = { name, createdAt: old?.createdAt ?? now, updatedAt: now, data: copy };
      await this.write(secret);
      this.secrets.set(name, secret);
      return { info: infoOf(secret), changed: true };
    });
  }

  /** Every secret's info, sorted by name. */
  list(): SecretInfo[] {
    return [...this.secrets.values()].map(infoOf).sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /** Removes secret `name`; returns whether it existed. Execs already started keep their env. */
  async delete(name: string): Promise<boolean> {
    checkSecretName(name);
    return this.serialized(async () => {
      if (!this.secrets.has(name)) return false;
      await rm(this.fileOf(name), { force: true });
      await fsyncDir(this.dir);
      this.secrets.delete(name);
      return true;
    });
  }

  resolve(ids: readonly string[]): Record<string, string> {
    const pairs: [string, string][] = [];
    for (const id of ids) {
      if (id === "") throw new InvalidArgumentError("a secret id must not be empty");
      const s = this.secrets.get(id);
      if (!s) throw new NotFoundError(`secret ${quote(id)} not found`);
      pairs.push(...s.data);
    }
    // fromEntries defines own properties, so even a key like __proto__ is plain data.
    return Object.fromEntries(pairs);
  }

  private fileOf(name: string): string {
    return join(this.dir, `${name}${FILE_SUFFIX}`);
  }

  private async write(s: Secret): Promise<void> {
    const body: SecretFile = {
      name: s.name,
      createdAt: s.createdAt,
      updatedAt: s.updatedAt,
      data: Object.fromEntries(s.data),
    };
    await writeFileAtomic(this.fileOf(s.name), JSON.stringify(body), this.dir, {
      mode: 0o600,
      tmpPrefix: TMP_PREFIX,
    });
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.run(fn);
  }
}

function infoOf(s: Secret): SecretInfo {
  return {
    name: s.name,
    keys: [...s.data.keys()].sort(),
    createdAt: s.createdAt,
    updatedAt: s.updatedAt,
  };
}

function sameData(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

async function readSecret(path: string, name: string): Promise<Secret | undefined> {
  try {
    const f = JSON.parse(await readFile(path, "utf8")) as Partial<SecretFile>;
    if (f.name !== name || typeof f.data !== "object" || f.data === null) return undefined;
    const data = new Map(Object.entries(f.data));
    checkSecretData(name, data);
    const createdAt = typeof f.createdAt === "number" ? f.createdAt : 0;
    const updatedAt = typeof f.updatedAt === "number" ? f.updatedAt : createdAt;
    return { name, createdAt, updatedAt, data };
  } catch {
    return undefined;
  }
}
