import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { create, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import {
  type CallOptions,
  type ChannelCredentials,
  type Client,
  credentials as grpcCredentials,
  Metadata,
  type MethodDefinition,
} from "@grpc/grpc-js";
import {
  TaskCommandRouter,
  TaskExecPollRequestSchema,
  TaskExecStdinWriteRequestSchema,
  TaskExecStdioFileDescriptor,
  TaskExecStdioReadRequestSchema,
  TaskExecWaitRequestSchema,
} from "../gen/modal_proto/task_command_router_pb.ts";
import { grpcServiceDef } from "../rpc/service-def.ts";
import type { ExitStatus } from "../runtime/runtime.ts";
import { MessagePool } from "../util/message-pool.ts";
import { BulkReader } from "./bulk-read.ts";
import { callChannel, uploadChannel } from "./channels.ts";
import { fromServiceError, isServiceError } from "./errors.ts";
import { frameInPlace, installInPlaceFraming } from "./in-place-frames.ts";
import type { ClientOptions, StartOptions } from "./options.ts";
import { DEFAULT_RETRY, isRetryable, type RetryPolicy, withRetry } from "./retry.ts";
import { STAGE_FROM, stdinHeadroom } from "./staging.ts";
import { startRequest, toExit } from "./start-request.ts";

export type { ClientOptions, PtyStartOptions, StartOptions } from "./options.ts";
export { STAGE_FROM, stdinHeadroom } from "./staging.ts";

export type StreamName = "stdout" | "stderr";

const ROUTER = grpcServiceDef(TaskCommandRouter);
/** Clients cancel Wait after this long and call again (SPEC). */
const WAIT_SLICE_MS = 60_000;

/**
 * A typed client of the TaskCommandRouter service. Every call is retried on
 * the retryable codes with bounded backoff; output reads resume from the
 * offset received so far; stdin writes carry offsets so retries never
 * duplicate bytes. Errors are RpcError (see ./errors.ts).
 */
export class RouterClient {
  readonly grpc: Client;
  private readonly retry: RetryPolicy;
  private readonly token: string | undefined;
  private readonly staging = new MessagePool();
  private readonly credentials: ChannelCredentials;
  /** Bulk reads' native receiver (./bulk-read.ts); undefined: they go through grpc-js too. */
  private readonly bulk: BulkReader | undefined;

  private uploadsChannel: Client | undefined;

  constructor(
    private readonly address: string,
    opts: ClientOptions = {},
  ) {
    this.credentials = opts.credentials ?? grpcCredentials.createInsecure();
    this.grpc = callChannel(address, this.credentials);
    this.retry = opts.retry ?? DEFAULT_RETRY;
    this.token = opts.token;
    this.bulk =
      opts.credentials === undefined && opts.bulkReads !== false
        ? BulkReader.forAddress(address)
        : undefined;
    installInPlaceFraming();
  }

  /** The channel of stdin streams, opened at the first (./channels.ts, `uploadChannel`). */
  get uploads(): Client {
    this.uploadsChannel ??= uploadChannel(this.address, this.credentials);
    return this.uploadsChannel;
  }

  close(): void {
    this.grpc.close();
    this.uploadsChannel?.close();
    this.bulk?.close();
  }

  metadata(): Metadata {
    const md = new Metadata();
    if (this.token) md.set("authorization", `Bearer ${this.token}`);
    return md;
  }

  /** One unary call (no retry), cancelled when `signal` aborts. */
  call<O>(
    def: MethodDefinition<unknown, unknown>,
    req: unknown,
    opts: { signal?: AbortSignal | undefined; deadlineMs?: number } = {},
  ): Promise<O> {
    return new Promise((resolve, reject) => {
      const callOpts: CallOptions = {};
      if (opts.deadlineMs !== undefined) callOpts.deadline = Date.now() + opts.deadlineMs;
      const call = this.grpc.makeUnaryRequest(
        def.path,
        def.requestSerialize,
        def.responseDeserialize,
        req,
        this.metadata(),
        callOpts,
        (err, res) => {
          opts.signal?.removeEventListener("abort", cancel);
          if (err) reject(err);
          else resolve(res as O);
        },
      );
      const cancel = () => call.cancel();
      opts.signal?.addEventListener("abort", cancel, { once: true });
    });
  }

  /** A unary call with the retry policy (`onFailedAttempt` sees each failure); errors become RpcError. */
  async unary<O>(
    method: string | MethodDefinition<unknown, unknown>,
    req: unknown,
    signal?: AbortSignal,
    onFailedAttempt?: (err: unknown) => void,
  ): Promise<O> {
    const def =
      typeof method === "string" ? (ROUTER[method] as MethodDefinition<unknown, unknown>) : method;
    try {
      const attempt = () => this.call<O>(def, req, { signal });
      return await withRetry(attempt, this.retry, signal, onFailedAttempt);
    } catch (err) {
      throw fromServiceError(err);
    }
  }

  /** Starts `argv` in the task; returns the exec id (idempotent on retry). */
  async start(taskId: string, argv: string[], opts: StartOptions = {}): Promise<string> {
    const execId = opts.execId ?? randomUUID();
    const req = startRequest(taskId, execId, argv, opts);
    await this.unary("taskExecStart", req);
    return execId;
  }

  /** The exit status, or undefined while the command runs. */
  async poll(taskId: string, execId: string): Promise<ExitStatus | undefined> {
    const res = await this.unary<{ exitStatus: { case?: string; value?: number } }>(
      "taskExecPoll",
      create(TaskExecPollRequestSchema, { taskId, execId }),
    );
    return toExit(res.exitStatus);
  }

  /** Waits for the exit status, re-calling Wait every 60 s as upstream clients do. */
  async wait(taskId: string, execId: string, signal?: AbortSignal): Promise<ExitStatus> {
    const def = ROUTER.taskExecWait as MethodDefinition<unknown, unknown>;
    const req = create(TaskExecWaitRequestSchema, { taskId, execId });
    for (;;) {
      try {
        const res = await withRetry(
          () =>
            this.call<{ exitStatus: { case?: string; value?: number } }>(def, req, {
              signal,
              deadlineMs: WAIT_SLICE_MS,
            }),
          this.retry,
          signal,
        );
        const s = toExit(res.exitStatus);
        if (s) return s;
      } catch (err) {
        if (isRetryable(err, signal)) continue; // the slice ran out: call again
        throw fromServiceError(err);
      }
    }
  }

  /**
   * Yields the bytes of one output stream from `offset` on, resuming from the
   * bytes received so far after a retryable failure (no gap, no repeat).
   * `bulk`: a read expected to be large (a file, a download), received off
   * the event loop where the native reader serves this client
   * (./bulk-read.ts); the bytes, errors and resumes are the same.
   */
  async *read(
    taskId: string,
    execId: string,
    stream: StreamName,
    opts: { offset?: number; signal?: AbortSignal; bulk?: boolean } = {},
  ): AsyncGenerator<Buffer, void, undefined> {
    const def = ROUTER.taskExecStdioRead as MethodDefinition<unknown, unknown>;
    let pos = opts.offset ?? 0;
    let failures = 0;
    let delay = this.retry.baseDelayMs;
    const fd =
      stream === "stdout" ? TaskExecStdioFileDescriptor.STDOUT : TaskExecStdioFileDescriptor.STDERR;
    for (;;) {
      const req = create(TaskExecStdioReadRequestSchema, {
        taskId,
        execId,
        offset: BigInt(pos),
        fileDescriptor: fd,
      });
      const call =
        opts.bulk && this.bulk
          ? this.bulk.call(def.path, this.metadata(), def.requestSerialize(req), (b) =>
              def.responseDeserialize(Buffer.from(b.buffer, b.byteOffset, b.byteLength)),
            )
          : this.grpc.makeServerStreamRequest(
              def.path,
              def.requestSerialize,
              def.responseDeserialize,
              req,
              this.metadata(),
              {},
            );
      const cancel = () => call.cancel();
      opts.signal?.addEventListener("abort", cancel, { once: true });
      try {
        for await (const msg of call as AsyncIterable<{ data: Uint8Array }>) {
          const d = msg.data;
          if (d.length === 0) continue;
          pos += d.length;
          failures = 0;
          delay = this.retry.baseDelayMs;
          yield Buffer.from(d.buffer, d.byteOffset, d.byteLength);
        }
        return;
      } catch (err) {
        if (!isRetryable(err, opts.signal) || ++failures >= this.retry.tries) {
          throw isServiceError(err) ? fromServiceError(err) : err;
        }
        await sleep(delay, undefined, opts.signal ? { signal: opts.signal } : {});
        delay = Math.min(delay * 2, this.retry.maxDelayMs);
      } finally {
        opts.signal?.removeEventListener("abort", cancel);
        call.cancel();
      }
    }
  }

  /** Writes `data` at `offset` of the exec's stdin (retried; the server drops repeats). */
  async writeStdin(
    taskId: string,
    execId: string,
    offset: number,
    data: Uint8Array,
    eof = false,
  ): Promise<void> {
    const staged =
      data.length >= STAGE_FROM ? this.stage(data, stdinHeadroom(taskId, execId)) : undefined;
    // The staged copy is this call's alone until it settled: grpc-js may frame it in place.
    const endLease = staged ? frameInPlace(staged.view) : undefined;
    const req = create(TaskExecStdinWriteRequestSchema, {
      taskId,
      execId,
      offset: BigInt(offset),
      data: staged?.view ?? data,
      eof,
    });
    let failures = 0;
    try {
      await this.unary("taskExecStdinWrite", req, undefined, () => failures++);
    } finally {
      endLease?.();
      // A success means the router read the whole message: grpc-js is done with it. An attempt
      // that failed may still be sending it (grpc-js ends a stream answered early without
      // resetting it): its buffer is left to the GC, never reused under it.
      if (failures === 0) staged?.release();
    }
  }

  /**
   * `data` copied into a reused buffer with room for the message header in
   * front (the serializer writes it there: one copy, no fresh buffer per
   * write). `release()` once no call uses it any more.
   */
  stage(data: Uint8Array, headroom?: number): { view: Buffer; release: () => void } {
    return this.staging.stage(data, headroom);
  }

  /** The staging pool's counts (MessagePool.counts): buffers taken, new, given back. */
  get stagingCounts(): { taken: number; fresh: number; given: number } {
    return this.staging.counts;
  }

  /** Builds a request message of any schema (for callers of `unary`). */
  static message<D extends DescMessage>(schema: D, init: MessageInitShape<D>) {
    return create(schema, init);
  }
}
