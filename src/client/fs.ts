import { InvalidArgumentError } from "../errors.ts";
import type { ExitStatus } from "../runtime/runtime.ts";
import type { RouterClient } from "./client.ts";
import { RpcError } from "./errors.ts";
import { ExecsClient } from "./execs.ts";
import { helperError } from "./fs-errors.ts";
import { type StdinInput, type WriteStdinOptions, writeStdinStream } from "./stdin-stream.ts";

export { FsError, type FsErrorKind } from "./fs-errors.ts";

/** Where Modal's SDKs (and taskrouter) keep the filesystem helper in every task. */
export const FS_TOOLS = "/__modal/.bin/modal-sandbox-fs-tools";

export type FileType = "file" | "directory" | "symlink";

/** A file's metadata (the helper's entry object, FS-TOOLS.md §3). */
export interface FileInfo {
  name: string;
  path: string;
  type: FileType;
  size: number;
  /** The whole st_mode (type and permission bits). */
  mode: number;
  /** st_mode & 0o7777 as four octal digits. */
  permissions: string;
  owner: string;
  group: string;
  /** Unix seconds, with a fraction. */
  modifiedTime: number;
  symlinkTarget: string | null;
}

export type WatchEventType = "Access" | "Create" | "Modify" | "Remove" | "Unknown";

export interface WatchEvent {
  eventType: WatchEventType;
  paths: string[];
}

export interface WatchOptions {
  recursive?: boolean;
  /** Kinds to report (undefined: all; []: none). `Modify` includes renames. */
  filter?: WatchEventType[];
  /** Stop after this long (truncated to whole seconds); undefined: until stopped. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

interface RawEntry {
  name: string;
  path: string;
  type: FileType;
  size: number;
  mode: number;
  permissions: string;
  owner: string;
  group: string;
  modified_time: number;
  symlink_target?: string | null;
}

const RENAMES = new Set(["Rename", "RenameFrom", "RenameTo"]);
const EVENT_TYPES = new Set(["Access", "Create", "Modify", "Remove", "Unknown"]);

/**
 * The filesystem of one task, as Modal's SDKs implement `sandbox.filesystem`:
 * each call runs the helper (FS_TOOLS) with one JSON command through
 * TaskExecStart, stdout and stderr piped, and reads its exit status, stdout
 * and stderr. A non-zero exit becomes an FsError (./fs-errors.ts) carrying the
 * helper's `error_kind`; call failures are RpcError. Paths must be absolute.
 */
export class TaskFilesystem {
  constructor(
    private readonly client: RouterClient,
    readonly taskId: string,
  ) {}

  async listFiles(path: string): Promise<FileInfo[]> {
    const out = await this.run({ ListFiles: { path } }, path);
    return (JSON.parse(out.toString("utf8")) as RawEntry[]).map(toInfo);
  }

  /** Describes `path` itself (a final symlink is not followed). */
  async stat(path: string): Promise<FileInfo> {
    return toInfo(JSON.parse((await this.run({ Stat: { path } }, path)).toString("utf8")));
  }

  async makeDirectory(path: string, opts: { parents?: boolean } = {}): Promise<void> {
    await this.run({ MakeDirectory: { path, parents: opts.parents ?? true } }, path);
  }

  async remove(path: string, opts: { recursive?: boolean } = {}): Promise<void> {
    await this.run({ Remove: { path, recursive: opts.recursive ?? false } }, path);
  }

  /**
   * The file's bytes as they arrive (not buffered whole). The helper checks
   * the file before it writes a byte, so failures (NotFound, IsDirectory,
   * FileTooLarge...) are thrown before the first chunk; a failure midway (an
   * I/O error) is thrown after the chunks already yielded.
   */
  async *readFile(path: string, signal?: AbortSignal): AsyncGenerator<Buffer> {
    check(path);
    const id = await this.start({ ReadFile: { path } });
    const status = this.client.wait(this.taskId, id, signal);
    status.catch(() => {});
    let done = false;
    try {
      yield* this.client.read(this.taskId, id, "stdout", { bulk: true, ...(signal && { signal }) });
      done = true;
    } finally {
      // Stopped early: end the helper rather than let it stream into the log.
      if (!done) await new ExecsClient(this.client).signal(this.taskId, id, "TERM").catch(() => {});
    }
    await this.expectSuccess(id, await status, path);
  }

  /**
   * Writes `source` to `path` (created with missing parents, or replaced
   * whole at the end: the helper commits only at EOF). The content streams
   * through TaskExecStdinWriteStream with its resumes. When the helper exits
   * early (IsDirectory...), the stream's FAILED_PRECONDITION/ABORTED is
   * dropped and the helper's own error thrown, as the SDKs do. When the
   * upload fails otherwise, the helper is sent SIGTERM (it deletes its
   * staging file) instead of being left waiting for an EOF.
   */
  async writeFile(path: string, source: StdinInput, opts: WriteStdinOptions = {}): Promise<number> {
    check(path);
    const id = await this.start({ WriteFile: { path } });
    let sent = 0;
    try {
      sent = await writeStdinStream(this.client, this.taskId, id, source, opts);
    } catch (err) {
      const early =
        err instanceof RpcError && (err.kind === "FailedPrecondition" || err.kind === "Aborted");
      if (!early || (await this.client.poll(this.taskId, id)) === undefined) {
        await new ExecsClient(this.client).signal(this.taskId, id, "TERM").catch(() => {});
        throw err;
      }
    }
    await this.expectSuccess(id, await this.client.wait(this.taskId, id, opts.signal), path);
    return sent;
  }

  /**
   * Events under `path` until the timeout, the signal, or the caller stops
   * iterating (then stdin is closed, which ends the helper). Renames are
   * reported as `Modify`, as by the SDKs.
   */
  async *watch(path: string, opts: WatchOptions = {}): AsyncGenerator<WatchEvent> {
    check(path);
    const filter =
      opts.filter === undefined
        ? null
        : opts.filter.flatMap((f) => (f === "Modify" ? [f, ...RENAMES] : [f]));
    const timeout = opts.timeoutMs === undefined ? null : Math.trunc(opts.timeoutMs / 1000);
    const cmd = { path, recursive: opts.recursive ?? false, filter, timeout_secs: timeout };
    const id = await this.start({ Watch: cmd });
    let ended = false;
    try {
      let rest = "";
      const utf8 = new TextDecoder();
      const read = this.client.read(
        this.taskId,
        id,
        "stdout",
        opts.signal ? { signal: opts.signal } : {},
      );
      for await (const chunk of read) {
        const lines = (rest + utf8.decode(chunk, { stream: true })).split("\n");
        rest = lines.pop() ?? "";
        for (const line of lines) {
          const ev = parseEvent(line);
          if (ev) yield ev;
        }
      }
      const last = parseEvent(rest + utf8.decode());
      if (last) yield last;
      ended = true;
    } finally {
      await this.client.writeStdin(this.taskId, id, 0, new Uint8Array(), true).catch(() => {});
      if (ended) await this.expectSuccess(id, await this.client.wait(this.taskId, id), path);
      else await this.client.wait(this.taskId, id).catch(() => {});
    }
  }

  /** Runs a command that reads no stdin; its stdout on success. */
  private async run(command: object, path: string): Promise<Buffer> {
    check(path);
    const id = await this.start(command);
    await this.expectSuccess(id, await this.client.wait(this.taskId, id), path);
    return collect(this.client.read(this.taskId, id, "stdout"));
  }

  private start(command: object): Promise<string> {
    return this.client.start(this.taskId, [FS_TOOLS, JSON.stringify(command)], {
      stdout: "pipe",
      stderr: "pipe",
    });
  }

  private async expectSuccess(id: string, status: ExitStatus, path: string): Promise<void> {
    if (status.code === 0) return;
    throw helperError(status, await collect(this.client.read(this.taskId, id, "stderr")), path);
  }
}

function check(path: string): void {
  if (!path.startsWith("/")) throw new InvalidArgumentError(`not an absolute path: ${path}`);
}

function toInfo(r: RawEntry): FileInfo {
  return {
    name: r.name,
    path: r.path,
    type: r.type,
    size: r.size,
    mode: r.mode,
    permissions: r.permissions,
    owner: r.owner,
    group: r.group,
    modifiedTime: r.modified_time,
    symlinkTarget: r.symlink_target ?? null,
  };
}

function parseEvent(line: string): WatchEvent | undefined {
  const t = line.trim();
  if (!t) return undefined;
  try {
    const j = JSON.parse(t) as { event_type?: unknown; paths?: unknown };
    let type = typeof j.event_type === "string" ? j.event_type : "";
    if (RENAMES.has(type)) type = "Modify";
    const paths = Array.isArray(j.paths) ? j.paths.filter((p) => typeof p === "string") : [];
    if (!EVENT_TYPES.has(type) || paths.length === 0) return undefined;
    return { eventType: type as WatchEventType, paths };
  } catch {
    return undefined;
  }
}

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}
