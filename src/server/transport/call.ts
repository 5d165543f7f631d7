import type { EventEmitter } from "node:events";
import {
  type handleClientStreamingCall,
  type handleServerStreamingCall,
  type handleUnaryCall,
  Metadata,
  type ServerWritableStream,
} from "@grpc/grpc-js";
import type { Logger } from "pino";
import { CancelledError, UnavailableError } from "../../errors.ts";
import type { Metrics } from "../../metrics/metrics.ts";
import type { Caller } from "../../tasks/grants.ts";
import { callerOf } from "./edge.ts";
import { type RawFraming, streamOf } from "./raw-frames.ts";
import { toGrpcError } from "./status.ts";

const MAX_OFFSET = BigInt(Number.MAX_SAFE_INTEGER);

/** A wire offset (uint64) as a number: past 2^53 - 1 it is clamped (no log is that long). */
export function wireOffset(o: bigint): number {
  return Number(o > MAX_OFFSET ? MAX_OFFSET : o);
}

/** What every handler gets: the logger, the signal that ends the call, and who called. */
export interface CallContext {
  log: Logger;
  /** Aborts when the client cancels or the server shuts down. */
  signal: AbortSignal;
  /** What the caller's token grants beyond its task (admin with `--auth none`). */
  caller: Caller;
}

/** Shared by all handlers of one server: logging, the shutdown signal and metrics. */
export interface ServerDeps {
  log: Logger;
  shutdown: AbortSignal;
  /** Where handlers report what they measure (image operation durations); none when unset. */
  metrics?: Metrics;
}

/**
 * The signal of one call: aborted by the client's cancel (CANCELLED) or the
 * server's shutdown (UNAVAILABLE). `release` must run when the call ends, so
 * the server-wide shutdown signal does not collect a listener per call.
 */
function callSignal(
  call: EventEmitter,
  shutdown: AbortSignal,
): { signal: AbortSignal; release: () => void } {
  const ac = new AbortController();
  const onCancel = () => ac.abort(new CancelledError("the client cancelled the call"));
  call.once("cancelled", onCancel);
  const onShutdown = () => ac.abort(new UnavailableError("the server is shutting down"));
  if (shutdown.aborted) onShutdown();
  else shutdown.addEventListener("abort", onShutdown, { once: true });
  return {
    signal: ac.signal,
    // grpc-js also reports a call that already ended as "cancelled": not an abort any more.
    release: () => {
      call.removeListener("cancelled", onCancel);
      shutdown.removeEventListener("abort", onShutdown);
    },
  };
}

/**
 * A client-streaming handler: `fn` gets the request messages as an async
 * iterable. Once the call was cancelled (by the client, or by the edge ending
 * it, e.g. INVALID_ARGUMENT for a malformed message), reading the stream
 * fails with a transport error ("Premature close"): the call ends with the
 * cancellation, not an INTERNAL for it.
 */
export function clientStream<Req, Res>(
  deps: ServerDeps,
  method: string,
  fn: (reqs: AsyncIterable<Req>, signal: AbortSignal) => Promise<Res>,
): handleClientStreamingCall<Req, Res> {
  return (call, callback) => {
    const { signal, release } = callSignal(call, deps.shutdown);
    fn(call as unknown as AsyncIterable<Req>, signal).then(
      (res) => {
        release();
        callback(null, res);
      },
      (err: unknown) => {
        release();
        callback(toGrpcError(signal.aborted ? signal.reason : err, deps.log, method));
      },
    );
  };
}

/** Adapts a promise-returning handler to a grpc-js unary handler with error mapping. */
export function unary<Req, Res>(
  deps: ServerDeps,
  method: string,
  fn: (req: Req, ctx: CallContext) => Promise<Res>,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const { signal, release } = callSignal(call, deps.shutdown);
    fn(call.request, { log: deps.log, signal, caller: callerOf(call.metadata) }).then(
      (res) => {
        release();
        callback(null, res);
      },
      (err: unknown) => {
        release();
        callback(toGrpcError(err, deps.log, method));
      },
    );
  };
}

/**
 * Adapts an async iterable of responses to a grpc-js server stream, honouring
 * the transport's backpressure: one response at a time is written, the next
 * one only after the previous one's write completed, while the iterable
 * produces the one after it. grpc-js's own queue (16 messages) therefore
 * stays empty and no more than two responses are alive at once.
 * With `raw` (./raw-frames.ts), responses go to the HTTP/2 stream as frames
 * built in their own memory, and `raw.release` runs after each one's write.
 */
export function serverStream<Req, Res>(
  deps: ServerDeps,
  method: string,
  fn: (req: Req, ctx: CallContext) => AsyncIterable<Res>,
  raw?: RawFraming<Res>,
): handleServerStreamingCall<Req, Res> {
  return (call) => {
    const { signal, release } = callSignal(call, deps.shutdown);
    void (async () => {
      try {
        const ctx = { log: deps.log, signal, caller: callerOf(call.metadata) };
        const out = raw ? rawWriter(call, raw, deps.log, method) : undefined;
        let previous: Promise<boolean> | undefined;
        for await (const msg of fn(call.request, ctx)) {
          if (previous && !(await previous)) break;
          if (signal.aborted) break;
          // A response's memory is reused only once its write completed (see RawFraming).
          previous = written(call, msg, signal, out).then((ok) => {
            if (ok) raw?.release(msg);
            return ok;
          });
        }
        if (previous) await previous;
        if (signal.aborted && !call.cancelled) throw signal.reason;
        if (!call.cancelled) call.end();
      } catch (err) {
        if (!call.cancelled) call.emit("error", toGrpcError(err, deps.log, method));
      } finally {
        release();
      }
    })();
  };
}

/**
 * A call's raw-frame writer: `prepare` gives the response's frame, undefined
 * (grpc-js must write it: headers still held by an interceptor) or "ended"
 * (the HTTP/2 stream is gone); `write` sends a prepared frame.
 */
interface RawWriter<Res> {
  prepare(msg: Res): Uint8Array | undefined | "ended";
  write(frame: Uint8Array, done: (err?: unknown) => void): void;
}

/**
 * The raw-frame writer of a call, or undefined (with a warning, once) when
 * grpc-js's HTTP/2 stream is not where raw-frames.ts looks for it.
 * Raw frames bypass grpc-js's per-message checks: the server's
 * max_send_message_length (4 MiB) is far above an output chunk (1 MiB), and
 * no interceptor of ours handles outgoing messages.
 */
function rawWriter<Res>(
  call: ServerWritableStream<unknown, Res>,
  raw: RawFraming<Res>,
  log: Logger,
  method: string,
): RawWriter<Res> | undefined {
  const stream = streamOf(call);
  if (!stream) {
    if (!warnedRaw) log.warn({ method }, "grpc-js internals changed: responses are copied");
    warnedRaw = true;
    return undefined;
  }
  return {
    prepare: (msg) => {
      if (stream.writableEnded || stream.closed || stream.destroyed) return "ended";
      if (!stream.headersSent) call.sendMetadata(new Metadata());
      return stream.headersSent ? raw.frame(msg) : undefined;
    },
    write: (frame, done) => stream.write(frame, done),
  };
}
let warnedRaw = false;

/**
 * Writes `msg`; resolves true once its write completed (grpc-js handed it to
 * the HTTP/2 stream, or the stream took the raw frame), false when the call
 * ended first (aborted, closed, failed, or the raw write failed: grpc-js then
 * never calls back, and the caller stops).
 */
function written<Res>(
  call: ServerWritableStream<unknown, Res>,
  msg: Res,
  signal: AbortSignal,
  raw: RawWriter<Res> | undefined,
): Promise<boolean> {
  // Outside the promise: a frame that cannot be built throws into the caller's loop.
  const frame = raw?.prepare(msg);
  return new Promise<boolean>((resolve) => {
    if (frame === "ended") return resolve(false);
    const settle = (ok: boolean) => {
      call.off("close", ended);
      call.off("error", ended);
      signal.removeEventListener("abort", ended);
      resolve(ok);
    };
    const ended = () => settle(false);
    call.once("close", ended);
    call.once("error", ended);
    signal.addEventListener("abort", ended, { once: true });
    if (frame && raw) raw.write(frame, (err) => settle(err === undefined || err === null));
    else call.write(msg, () => settle(true));
  });
}
