/**
 * An independent TaskCommandRouter client for wire-compatibility tests:
 * `@grpc/grpc-js` + `@grpc/proto-loader` loading the project's .proto files,
 * sharing no code with src/ (no protobuf-es, no project client). Requests are
 * plain snake_case objects, exactly what a grpc-js user of the protocol sends.
 */
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { protoPath as healthProtoPath } from "grpc-health-check";

const PROTO_DIR = fileURLToPath(new URL("../../proto", import.meta.url));
const LOADER_OPTS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

const routerDef = protoLoader.loadSync("modal_proto/task_command_router.proto", LOADER_OPTS);
const healthDef = protoLoader.loadSync(healthProtoPath, { ...LOADER_OPTS, enums: String });

type Ctor = new (
  address: string,
  creds: grpc.ChannelCredentials,
  opts?: grpc.ChannelOptions,
) => grpc.Client;
const RouterCtor = grpc.makeGenericClientConstructor(
  routerDef["modal.task_command_router.TaskCommandRouter"] as grpc.ServiceDefinition,
  "TaskCommandRouter",
) as unknown as Ctor;
const HealthCtor = grpc.makeGenericClientConstructor(
  healthDef["grpc.health.v1.Health"] as grpc.ServiceDefinition,
  "Health",
) as unknown as Ctor;

/** Largest output chunk the protocol allows. */
export const MAX_CHUNK = 1024 * 1024;

/** Wire enum values (numbers, as proto-loader sends them without `enums: String`). */
export const STDOUT = { DEVNULL: 0, PIPE: 1 } as const;
export const STDERR = { DEVNULL: 0, PIPE: 1, STDOUT: 2 } as const;
export const FD = { STDOUT: 0, STDERR: 1 } as const;

export interface StartRequest {
  task_id: string;
  exec_id: string;
  command_args: string[];
  stdout_config?: number;
  stderr_config?: number;
  timeout_secs?: number;
  workdir?: string;
  secret_ids?: string[];
  pty_info?: Record<string, unknown>;
  runtime_debug?: boolean;
  container_id?: string;
  env?: Record<string, string>;
  secret_sources?: ({ secret_id: string } | { env: { contents: Record<string, string> } })[];
}

export interface ReadRequest {
  task_id: string;
  exec_id: string;
  offset?: number;
  file_descriptor?: number;
}

/** A SandboxStdioReadV2 request (a task's entrypoint output). */
export interface SandboxReadRequest {
  task_id: string;
  offset?: number;
  file_descriptor?: number;
}

/** One SandboxStdioReadV2 message as proto-loader gives it (uint64 as a string). */
export interface SandboxChunk {
  data: Buffer;
  starting_offset: string;
}

export interface WriteRequest {
  task_id: string;
  exec_id: string;
  offset?: number;
  data?: Buffer;
  eof?: boolean;
}

/** An exit status as the oneof says it: exactly one of code or signal. */
export type Exit = { code: number } | { signal: number };

export interface CallOptions {
  /** Cancels the call (the client side of a cancelled RPC). */
  signal?: AbortSignal;
  /** Milliseconds from now. */
  deadlineMs?: number;
}

export interface ReadResult {
  data: Buffer;
  /** Size of every `data` message, in order. */
  sizes: number[];
}

export interface HashResult {
  sha256: string;
  length: number;
  sizes: { min: number; max: number; count: number };
}

type Callback = (err: grpc.ServiceError | null, res?: Record<string, unknown>) => void;
type UnaryFn = (
  req: unknown,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: Callback,
) => grpc.ClientUnaryCall;
type StreamFn = (
  req: unknown,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
) => grpc.ClientReadableStream<{ data: Buffer }>;

function toExit(res: Record<string, unknown>): Exit | undefined {
  if (res.exit_status === "code") return { code: res.code as number };
  if (res.exit_status === "signal") return { signal: res.signal as number };
  return undefined;
}

/** A proto-loader TaskCommandRouter client on its own channel. */
export class WireClient {
  readonly raw: grpc.Client;

  constructor(address: string, options: grpc.ChannelOptions = {}) {
    this.raw = new RouterCtor(address, grpc.credentials.createInsecure(), {
      "grpc.max_receive_message_length": 4 * 1024 * 1024,
      ...options,
    });
  }

  /** Any unary method by its proto name (e.g. "TaskExecStdinStatus"). */
  unary(method: string, req: unknown, opts: CallOptions = {}): Promise<Record<string, unknown>> {
    const fn = (this.raw as unknown as Record<string, UnaryFn>)[method] as UnaryFn;
    const callOpts: grpc.CallOptions = {};
    if (opts.deadlineMs !== undefined) callOpts.deadline = Date.now() + opts.deadlineMs;
    return new Promise((resolve, reject) => {
      const call = fn.call(this.raw, req, new grpc.Metadata(), callOpts, (err, res) =>
        err ? reject(err) : resolve(res ?? {}),
      );
      if (opts.signal?.aborted) call.cancel();
      opts.signal?.addEventListener("abort", () => call.cancel(), { once: true });
    });
  }

  async start(req: StartRequest): Promise<void> {
    await this.unary("TaskExecStart", req);
  }

  /** Exit status, or undefined while running (exit_status unset). */
  async poll(task_id: string, exec_id: string): Promise<Exit | undefined> {
    return toExit(await this.unary("TaskExecPoll", { task_id, exec_id }));
  }

  async wait(task_id: string, exec_id: string, opts: CallOptions = {}): Promise<Exit> {
    const res = await this.unary("TaskExecWait", { task_id, exec_id }, opts);
    const exit = toExit(res);
    if (!exit) throw new Error(`TaskExecWait returned no exit_status: ${JSON.stringify(res)}`);
    return exit;
  }

  async write(req: WriteRequest): Promise<void> {
    await this.unary("TaskExecStdinWrite", req);
  }

  /** The raw server stream of TaskExecStdioRead. */
  read(req: ReadRequest): grpc.ClientReadableStream<{ data: Buffer }> {
    const fn = (this.raw as unknown as Record<string, StreamFn>).TaskExecStdioRead as StreamFn;
    return fn.call(this.raw, req, new grpc.Metadata(), {});
  }

  /** The raw server stream of SandboxStdioReadV2. */
  sandboxRead(req: SandboxReadRequest): grpc.ClientReadableStream<SandboxChunk> {
    const fn = (this.raw as unknown as Record<string, StreamFn>).SandboxStdioReadV2 as StreamFn;
    return fn.call(
      this.raw,
      req,
      new grpc.Metadata(),
      {},
    ) as unknown as grpc.ClientReadableStream<SandboxChunk>;
  }

  /** Reads a stream to its end (rejects with the call's error). */
  async readAll(req: ReadRequest): Promise<ReadResult> {
    const parts: Buffer[] = [];
    const sizes: number[] = [];
    for await (const msg of this.read(req)) {
      parts.push(msg.data);
      sizes.push(msg.data.length);
    }
    return { data: Buffer.concat(parts), sizes };
  }

  /** Reads a stream to its end, hashing instead of keeping the bytes; `progress` gets the running total. */
  async readHash(req: ReadRequest, progress?: (bytes: number) => void): Promise<HashResult> {
    const h = createHash("sha256");
    let length = 0;
    const sizes = { min: Number.POSITIVE_INFINITY, max: 0, count: 0 };
    for await (const msg of this.read(req)) {
      const n = msg.data.length;
      h.update(msg.data);
      length += n;
      sizes.min = Math.min(sizes.min, n);
      sizes.max = Math.max(sizes.max, n);
      sizes.count++;
      progress?.(length);
    }
    return { sha256: h.digest("hex"), length, sizes };
  }

  close(): void {
    this.raw.close();
  }
}

/** grpc.health.v1.Health/Check through proto-loader; resolves with the status name. */
export function healthCheck(address: string, service: string): Promise<string> {
  const client = new HealthCtor(address, grpc.credentials.createInsecure());
  const check = (client as unknown as Record<string, UnaryFn>).Check as UnaryFn;
  return new Promise<string>((resolve, reject) => {
    check.call(client, { service }, new grpc.Metadata(), {}, (err, res) =>
      err ? reject(err) : resolve(String(res?.status)),
    );
  }).finally(() => client.close());
}

/**
 * Awaits `p` and asserts it fails with gRPC status `code` (and, when given, a
 * details text matching `details`). Returns the error for further checks.
 */
export async function expectStatus(
  p: Promise<unknown>,
  code: grpc.status,
  details?: RegExp,
): Promise<grpc.ServiceError> {
  let result: unknown;
  try {
    result = await p;
  } catch (err) {
    const e = err as grpc.ServiceError;
    if (e.code !== code) {
      throw new Error(
        `expected status ${grpc.status[code]}, got ${grpc.status[e.code] ?? e.code}: ${e.details ?? e.message}`,
      );
    }
    if (details && !details.test(e.details)) {
      throw new Error(
        `status ${grpc.status[code]} details ${JSON.stringify(e.details)} do not match ${details}`,
      );
    }
    return e;
  }
  throw new Error(
    `expected status ${grpc.status[code]}, but the call succeeded: ${JSON.stringify(result)}`,
  );
}

export { grpc };
