import { once } from "node:events";
import { create, toBinary } from "@bufbuild/protobuf";
import type { ClientWritableStream, MethodDefinition, ServiceError } from "@grpc/grpc-js";
import { status as Code } from "@grpc/grpc-js";
import { CancelledError } from "../errors.ts";
import {
  TaskCommandRouter,
  TaskExecStdinStatusRequestSchema,
  type TaskExecStdinStatusResponse,
  TaskExecStdinWriteStreamRequestSchema,
} from "../gen/modal_proto/task_command_router_pb.ts";
import { bytesField } from "../rpc/service-def.ts";
import { recycle } from "../util/chunk-pool.ts";
import { headroomOf } from "../util/headroom.ts";
import type { RouterClient } from "./client.ts";
import { fromServiceError, isServiceError, RETRYABLE } from "./errors.ts";
import { frameInPlace } from "./in-place-frames.ts";
import { methodsOf } from "./methods.ts";
import { STAGE_FROM } from "./staging.ts";
import { DEFAULT_REPLAY, reader, STDIN_CHUNK, type StdinInput } from "./stdin-source.ts";

export {
  DEFAULT_REPLAY,
  fileSource,
  type SeekableSource,
  STDIN_CHUNK,
  type StdinInput,
} from "./stdin-source.ts";

/** Resumes after the first attempt, as the JS SDK allows. */
export const MAX_RESUMES = 9;

export interface WriteStdinOptions {
  signal?: AbortSignal;
  /** Resumes allowed after a failed stream (default 9, as the SDKs). */
  maxResumes?: number;
  /** Bytes kept for replay of a one-shot source (default 64 MiB). */
  replayBytes?: number;
  /** Called with the resume offset before each resume. */
  onResume?: (offset: number, err: unknown) => void;
}

export interface StdinStatus {
  /** Stdin bytes accepted so far by every write path. */
  written: number;
  /** EOF was received. */
  closed: boolean;
}

const def = methodsOf(TaskCommandRouter);

/** TaskExecStdinStatus (retried). Evicts the exec's stdin stream in flight, if any. */
export async function stdinStatus(
  client: RouterClient,
  taskId: string,
  execId: string,
  signal?: AbortSignal,
): Promise<StdinStatus> {
  const res = await client.unary<TaskExecStdinStatusResponse>(
    def("taskExecStdinStatus"),
    create(TaskExecStdinStatusRequestSchema, { taskId, execId }),
    signal,
  );
  return { written: Number(res.numBytesWritten), closed: res.closed };
}

type Msg = { start: number } | { data: Uint8Array } | { end: true };

/**
 * Streams `source` into the exec's stdin (TaskExecStdinWriteStream: start,
 * data chunks of at most STDIN_CHUNK, end) with backpressure, and closes stdin at
 * the end. Resumes as the JS SDK does (PROTOCOL-LATER §5.4): after a failure
 * with a transient code or UNAUTHENTICATED it asks TaskExecStdinStatus; stdin
 * closed with everything sent and counted is success, closed otherwise is the
 * stream's error, open reopens at `num_bytes_written`; at most 9 resumes. A
 * failing source or an abort ends the call without `end`, so stdin stays open
 * (nothing partial is committed). Returns the bytes sent; errors are RpcError,
 * the source's own error, or CancelledError.
 */
export async function writeStdinStream(
  client: RouterClient,
  taskId: string,
  execId: string,
  source: StdinInput,
  opts: WriteStdinOptions = {},
): Promise<number> {
  const read = reader(source, opts.replayBytes ?? DEFAULT_REPLAY);
  const maxResumes = opts.maxResumes ?? MAX_RESUMES;
  const method = streamMethod(taskId, execId);
  let offset = 0;
  for (let attempt = 0; ; attempt++) {
    const state = { sent: offset, exhausted: false, sourceError: undefined as unknown };
    try {
      await attemptStream(client, method, read(offset), state, opts.signal);
      return state.sent;
    } catch (err) {
      if (state.sourceError !== undefined) throw state.sourceError;
      if (opts.signal?.aborted) throw abortReason(opts.signal);
      if (!isServiceError(err) || !(RETRYABLE.has(err.code) || err.code === Code.UNAUTHENTICATED)) {
        throw fromServiceError(err);
      }
      if (attempt >= maxResumes) throw fromServiceError(err);
      const st = await stdinStatus(client, taskId, execId, opts.signal);
      if (st.closed) {
        // Only our `end` closes stdin: if all was sent and counted, just the answer was lost.
        if (state.exhausted && st.written === state.sent) return state.sent;
        throw fromServiceError(err);
      }
      offset = st.written;
      opts.onResume?.(offset, err);
    }
  }
}

/** One attempt: start at the first offset, the source's chunks, end; resolves on OK. */
async function attemptStream(
  client: RouterClient,
  method: MethodDefinition<Msg, unknown>,
  chunks: AsyncIterable<Uint8Array>,
  state: { sent: number; exhausted: boolean; sourceError: unknown },
  signal: AbortSignal | undefined,
): Promise<void> {
  if (signal?.aborted) throw abortReason(signal);
  let settle: (err: ServiceError | null) => void = () => {};
  const done = new Promise<ServiceError | null>((resolve) => {
    settle = resolve;
  });
  const call: ClientWritableStream<Msg> = client.uploads.makeClientStreamRequest(
    method.path,
    method.requestSerialize,
    method.responseDeserialize,
    client.metadata(),
    {},
    (err) => settle(err),
  );
  call.on("error", () => {}); // reported through the callback
  const cancel = () => call.cancel();
  signal?.addEventListener("abort", cancel, { once: true });
  // Stops the writer as soon as the call has failed (no drain will come then).
  let failed = false;
  const failure = new Promise<void>((resolve) => {
    void done.then((err) => {
      if (err === null) return;
      failed = true;
      resolve();
    });
  });
  const send = async (m: Msg, written?: (err?: Error | null) => void) => {
    if (failed || call.write(m, written)) return;
    // A failed call reports through its callback; `once` would reject on its "error".
    await Promise.race([once(call, "drain").catch(() => {}), failure]);
  };
  const it = chunks[Symbol.asyncIterator]();
  const stopped = failure.then(() => undefined);
  try {
    await send({ start: state.sent });
    while (!failed) {
      let r: IteratorResult<Uint8Array>;
      try {
        // A call that fails while the source is slow is noticed at once.
        const next = it.next();
        const first = await Promise.race([next, stopped]);
        if (!first) {
          next.catch(() => {});
          break;
        }
        r = first;
      } catch (err) {
        state.sourceError = err ?? new Error("the stdin source failed");
        call.cancel();
        throw state.sourceError;
      }
      if (r.done) break;
      const chunk = r.value;
      for (let i = 0; i < chunk.length && !failed; i += STDIN_CHUNK) {
        // A chunk that fits is sent as is: a pooled one has headroom for the header (see
        // `streamMethod`); other data is staged in a reused buffer that has.
        const piece = chunk.length <= STDIN_CHUNK ? chunk : chunk.subarray(i, i + STDIN_CHUNK);
        const pooled = headroomOf(piece) > 0;
        const staged = pooled || piece.length < STAGE_FROM ? undefined : client.stage(piece);
        const data = staged?.view ?? piece;
        state.sent += piece.length;
        // Memory of ours (pooled, staged) is framed in place; the upload channel acknowledges a
        // write once its bytes went to the socket (./channels.ts): the memory serves again then.
        const endLease = pooled || staged ? frameInPlace(data) : undefined;
        const last = i + STDIN_CHUNK >= chunk.length;
        await send({ data }, (err) => {
          endLease?.();
          // grpc-js reports no write errors here, and a reset stream completes its queued writes
          // before their bytes all went out: after any failure the memory is left to the GC.
          if (err || failed) return;
          staged?.release();
          if (last) recycle(chunk);
        });
      }
    }
    if (!failed) {
      state.exhausted = true;
      await send({ end: true });
      call.end();
    }
    const err = await done;
    if (err) throw err;
  } finally {
    signal?.removeEventListener("abort", cancel);
    call.cancel(); // a no-op once the call has ended
    if (!state.exhausted && state.sourceError === undefined) it.return?.()?.catch(() => {});
  }
}

/**
 * The method definition with a serializer that writes a data message in
 * the chunk's headroom (src/util/headroom.ts: a pooled file chunk, staged
 * data), and copies a chunk without any.
 */
function streamMethod(taskId: string, execId: string): MethodDefinition<Msg, unknown> {
  const base = def("taskExecStdinWriteStream");
  const serialize = (m: Msg): Buffer => {
    // `data` is field 2 of the request (in its oneof `payload`).
    if ("data" in m) return bytesField(2, m.data);
    const msg = create(TaskExecStdinWriteStreamRequestSchema, {
      payload:
        "start" in m
          ? { case: "start", value: { taskId, execId, offset: BigInt(m.start) } }
          : { case: "end", value: {} },
    });
    return Buffer.from(toBinary(TaskExecStdinWriteStreamRequestSchema, msg));
  };
  return { ...base, requestSerialize: serialize } as MethodDefinition<Msg, unknown>;
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error && signal.reason.name !== "AbortError"
    ? signal.reason
    : new CancelledError("the stdin upload was cancelled");
}
