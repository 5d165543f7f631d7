/**
 * `sandbox.filesystem` as Modal's SDKs drive it (../shared/FS-TOOLS.md
 * §1, §2, §6), through the independent proto-loader client
 * (./wire-client.ts): TaskExecStart with argv [helper, json], stdout and
 * stderr PIPE, no env or workdir; TaskExecWait; then stdout and stderr read;
 * on a non-zero exit the error JSON parsed from stderr. WriteFile streams
 * stdin (start, data, end) and, when that stream fails with
 * FAILED_PRECONDITION or ABORTED, polls the exec as the SDKs do.
 */
import assert from "node:assert/strict";
import { createCipheriv, createHash, randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { DaemonConfig } from "../../src/daemon.ts";
import { startRouter, type TestRouter } from "./router.ts";
import { OCI_RUNTIMES, runcSkipReason, startRuncRouter } from "./runc.ts";
import {
  type Exit,
  FD,
  grpc,
  type HashResult,
  STDERR,
  STDOUT,
  type WireClient,
} from "./wire-client.ts";
import { openStdinStream } from "./wire-stream.ts";

/** Where the SDKs exec the helper, in every task. */
export const FS_TOOLS_PATH = "/__modal/.bin/modal-sandbox-fs-tools";
export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** The runtimes of the conformance suite: host, and runc with each OCI runtime. */
export interface Variant {
  label: string;
  /** The OCI runtime binary; undefined: the host runtime. */
  oci: string | undefined;
}
export const VARIANTS: Variant[] = [
  { label: "host runtime", oci: undefined },
  ...OCI_RUNTIMES.map((o) => ({
    label: o.label === "runc" ? "runc runtime" : `runc runtime, --oci-runtime ${o.label}`,
    oci: o.binary as string,
  })),
];

/** Why `v` cannot run here (printed by runcSkipReason), or undefined. */
export function variantSkip(v: Variant): Promise<string | undefined> {
  return v.oci ? runcSkipReason(v.oci) : Promise.resolve(undefined);
}

/** A router of variant `v`: host tasks, or runc tasks with its OCI runtime. */
export function startVariant(v: Variant, config: Partial<DaemonConfig> = {}): Promise<TestRouter> {
  return v.oci ? startRuncRouter({ ...config, ociRuntime: v.oci }) : startRouter(config);
}

/**
 * A directory the tests of `task` may use: under the host task's own
 * directory (removed with the router's data dir), or /tmp in a runc task
 * (removed with the container).
 */
export function taskBase(r: TestRouter, v: Variant, task: string): string {
  return v.oci ? "/tmp/fs-router" : `${r.dataDir}/tasks/${task}/work/fs-router`;
}

/** The helper's error object (stderr of a failure). */
export interface HelperError {
  version?: number;
  error_kind: string;
  message: string;
  detail?: string;
}

export interface FsResult {
  execId: string;
  exit: Exit;
  stdout: Buffer;
  stderr: string;
}

/** An entry of ListFiles / the result of Stat (FS-TOOLS.md §3). */
export interface Entry {
  name: string;
  path: string;
  type: "file" | "directory" | "symlink";
  size: number;
  mode: number;
  permissions: string;
  owner: string;
  group: string;
  modified_time: number;
  symlink_target: string | null;
}

export interface WatchEvent {
  event_type: string;
  paths: string[];
}

/** One chunk-producing source for WriteFile. */
export type Source = Buffer | AsyncIterable<Buffer>;

/** The SDK's chunk size for stdin uploads. */
const UPLOAD_CHUNK = 256 * 1024;

/** The filesystem of one task, the SDK way, over `client`. */
export class SdkFs {
  constructor(
    readonly client: WireClient,
    readonly taskId: string,
  ) {}

  /** TaskExecStart of the helper with one argument: `command` JSON-encoded, or a string as is. */
  async start(command: unknown): Promise<string> {
    const exec_id = randomUUID();
    await this.client.start({
      task_id: this.taskId,
      exec_id,
      command_args: [
        FS_TOOLS_PATH,
        typeof command === "string" ? command : JSON.stringify(command),
      ],
      stdout_config: STDOUT.PIPE,
      stderr_config: STDERR.PIPE,
    });
    return exec_id;
  }

  /** Wait first (as the SDKs do), then stdout and stderr read whole. */
  async run(command: unknown): Promise<FsResult> {
    const execId = await this.start(command);
    return this.finish(execId);
  }

  /** Wait, then the exec's stdout and stderr. */
  async finish(execId: string): Promise<FsResult> {
    const exit = await this.client.wait(this.taskId, execId);
    const stdout = await this.stdout(execId);
    const stderr = (await this.readFd(execId, FD.STDERR)).toString("utf8");
    return { execId, exit, stdout, stderr };
  }

  /** Wait first, then stdout hashed while it streams (never held whole), then stderr. */
  async runHashed(command: unknown): Promise<{ exit: Exit; out: HashResult; stderr: string }> {
    const execId = await this.start(command);
    const exit = await this.client.wait(this.taskId, execId);
    const out = await this.client.readHash({
      task_id: this.taskId,
      exec_id: execId,
      file_descriptor: FD.STDOUT,
    });
    const stderr = (await this.readFd(execId, FD.STDERR)).toString("utf8");
    return { exit, out, stderr };
  }

  stdout(execId: string): Promise<Buffer> {
    return this.readFd(execId, FD.STDOUT);
  }

  private async readFd(execId: string, fd: number): Promise<Buffer> {
    const res = await this.client.readAll({
      task_id: this.taskId,
      exec_id: execId,
      file_descriptor: fd,
    });
    return res.data;
  }

  /**
   * WriteFile: start the helper, stream `source` into its stdin (start at
   * offset 0, ≤ 256 KiB data messages, end). A FAILED_PRECONDITION or ABORTED
   * stream is the helper having exited early: poll until its exit is known,
   * then read its result like any other command. Any other stream error is
   * thrown (an SDK would surface it as a transport error).
   */
  async writeFile(path: string, source: Source): Promise<FsResult & { streamCode?: number }> {
    const execId = await this.start({ WriteFile: { path } });
    let streamCode: number | undefined;
    try {
      await this.upload(execId, source);
    } catch (err) {
      const code = (err as grpc.ServiceError).code;
      if (code !== grpc.status.FAILED_PRECONDITION && code !== grpc.status.ABORTED) throw err;
      streamCode = code;
      // As the SDKs: poll the exec (it has exited; its status may lag the stream's answer).
      const deadline = Date.now() + 60_000;
      while ((await this.client.poll(this.taskId, execId)) === undefined) {
        assert.ok(Date.now() < deadline, `stdin ${grpc.status[code]} but the exec never exited`);
        await sleep(50);
      }
    }
    const res = await this.finish(execId);
    return streamCode === undefined ? res : { ...res, streamCode };
  }

  private async upload(execId: string, source: Source): Promise<void> {
    const s = openStdinStream(this.client);
    // A call that ended early never drains: every send also watches the outcome.
    const ended = s.result.then(() => {
      throw new Error("the stdin stream was answered before `end`");
    });
    ended.catch(() => {});
    const send = (msg: Parameters<typeof s.send>[0]) => Promise.race([s.send(msg), ended]);
    try {
      await send({ start: { task_id: this.taskId, exec_id: execId, offset: 0 } });
      const chunks = Buffer.isBuffer(source) ? [source] : source;
      for await (const chunk of chunks) {
        for (let p = 0; p < chunk.length; p += UPLOAD_CHUNK) {
          await send({ data: chunk.subarray(p, Math.min(p + UPLOAD_CHUNK, chunk.length)) });
        }
      }
      await send({ end: {} });
      await s.finish();
    } catch (err) {
      // A send that lost the race to the call's error rejected with that error.
      s.cancel();
      throw err;
    }
  }

  /** Starts a Watch (every field sent, as the SDKs do); its stdout lines collected as they arrive. */
  async watch(
    path: string,
    opts: { recursive?: boolean; filter?: string[] | null; timeout_secs?: number | null } = {},
  ): Promise<SdkWatch> {
    const execId = await this.start({
      Watch: {
        path,
        recursive: opts.recursive ?? false,
        filter: opts.filter ?? null,
        timeout_secs: opts.timeout_secs ?? null,
      },
    });
    return new SdkWatch(this, execId);
  }
}

/** A running Watch exec: its events, read from stdout while it runs. */
export class SdkWatch {
  readonly events: WatchEvent[] = [];
  readonly lines: string[] = [];
  /** Settles when the stdout stream ends (the exec exited) or fails. */
  readonly reading: Promise<void>;
  private partial = "";
  /** Why reading stdout failed (a line that is not JSON, a failed call). */
  private readError: unknown;

  constructor(
    private readonly fs: SdkFs,
    readonly execId: string,
  ) {
    this.reading = (async () => {
      const stream = fs.client.read({
        task_id: fs.taskId,
        exec_id: execId,
        file_descriptor: FD.STDOUT,
      });
      for await (const msg of stream) {
        const lines = (this.partial + msg.data.toString("utf8")).split("\n");
        this.partial = lines.pop() ?? "";
        for (const line of lines) {
          this.lines.push(line);
          this.events.push(JSON.parse(line) as WatchEvent);
        }
      }
    })();
    this.reading.catch((err: unknown) => {
      this.readError = err;
    });
  }

  /** Waits (generously, polling) until an event satisfies `match`; returns it. */
  async until(match: (e: WatchEvent) => boolean, what: string, from = 0): Promise<number> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const i = this.events.findIndex((e, j) => j >= from && match(e));
      if (i >= 0) return i;
      if (this.readError !== undefined) throw this.readError;
      assert.ok(Date.now() < deadline, `no ${what} in ${JSON.stringify(this.events)}`);
      await sleep(25);
    }
  }

  /** Stops it as the SDKs do (an EOF-only TaskExecStdinWrite), then its exit and stderr. */
  async stop(): Promise<{ exit: Exit; stderr: string; partial: string }> {
    const { client, taskId } = this.fs;
    await client.write({ task_id: taskId, exec_id: this.execId, offset: 0, eof: true });
    const exit = await client.wait(taskId, this.execId);
    await this.reading;
    const stderr = (
      await client.readAll({ task_id: taskId, exec_id: this.execId, file_descriptor: FD.STDERR })
    ).data.toString("utf8");
    return { exit, stderr, partial: this.partial };
  }
}

/** Asserts a success (exit 0, empty stderr) and returns stdout. */
export function ok(r: FsResult): Buffer {
  assert.deepEqual(r.exit, { code: 0 }, `exit of a success (stderr: ${r.stderr})`);
  assert.equal(r.stderr, "", "stderr of a success");
  return r.stdout;
}

/** A success's stdout as JSON. */
export function okJson<T>(r: FsResult): T {
  return JSON.parse(ok(r).toString("utf8")) as T;
}

/**
 * Asserts a failure the SDK way: a non-zero exit and stderr (trimmed) exactly
 * one JSON object with string `error_kind` == `kind`, a non-empty `message`
 * not naming `path`, and `detail` a string when present. Returns the object.
 */
export function fails(r: { exit: Exit; stderr: string }, kind: string, path?: string): HelperError {
  assert.ok(
    "code" in r.exit && r.exit.code !== 0,
    `a failure exits non-zero: ${JSON.stringify(r)}`,
  );
  let e: unknown;
  try {
    e = JSON.parse(r.stderr.trim());
  } catch {
    assert.fail(`stderr is not one JSON object: ${JSON.stringify(r.stderr)}`);
  }
  assert.ok(e !== null && typeof e === "object" && !Array.isArray(e), r.stderr);
  const o = e as Record<string, unknown>;
  assert.equal(o.error_kind, kind, r.stderr);
  assert.equal(typeof o.message, "string", r.stderr);
  assert.notEqual(o.message, "", r.stderr);
  if ("detail" in o) assert.equal(typeof o.detail, "string", r.stderr);
  if (path !== undefined) {
    assert.ok(!String(o.message).includes(path), `message names the path: ${r.stderr}`);
  }
  return o as unknown as HelperError;
}

/**
 * Deterministic pseudo-random bytes: the AES-256-CTR keystream of `seed`,
 * `total` bytes in `block`-sized buffers, each hashed into `hash` as it is
 * produced (the data is never held whole).
 */
export async function* pseudoRandom(
  seed: string,
  total: number,
  hash: ReturnType<typeof createHash>,
  block = 4 * MiB,
): AsyncGenerator<Buffer> {
  const key = createHash("sha256").update(seed).digest();
  const cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  const zeros = Buffer.alloc(block);
  for (let done = 0; done < total; ) {
    const n = Math.min(block, total - done);
    const chunk = cipher.update(n === block ? zeros : zeros.subarray(0, n));
    hash.update(chunk);
    done += n;
    yield chunk;
  }
}

/** The sha256 of `n` zero bytes, computed without holding them. */
export function zerosSha256(n: number): string {
  const h = createHash("sha256");
  const block = Buffer.alloc(Math.min(n, 16 * MiB));
  for (let done = 0; done < n; done += block.length) {
    h.update(n - done >= block.length ? block : block.subarray(0, n - done));
  }
  return h.digest("hex");
}

/** Runs `sh -c script` in `task` (not the SDK path: setup and checks); asserts exit 0, returns stdout. */
export async function shell(client: WireClient, task: string, script: string): Promise<string> {
  const exec_id = randomUUID();
  await client.start({
    task_id: task,
    exec_id,
    command_args: ["sh", "-c", script],
    stdout_config: STDOUT.PIPE,
    stderr_config: STDERR.PIPE,
  });
  const exit = await client.wait(task, exec_id);
  const out = await client.readAll({ task_id: task, exec_id, file_descriptor: FD.STDOUT });
  const err = await client.readAll({ task_id: task, exec_id, file_descriptor: FD.STDERR });
  assert.deepEqual(exit, { code: 0 }, `sh -c ${script}: ${err.data.toString()}`);
  return out.data.toString("utf8");
}
