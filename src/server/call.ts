import type {
  handleServerStreamingCall,
  handleUnaryCall,
  ServerUnaryCall,
  ServerWritableStream,
} from "@grpc/grpc-js";
import type { Logger } from "pino";
import { CancelledError, UnavailableError } from "../errors.ts";
import { toGrpcError } from "./status.ts";

/** What every handler gets: the logger and the signal that ends the call. */
export interface CallContext {
  log: Logger;
  /** Aborts when the client cancels or the server shuts down. */
  signal: AbortSignal;
}

/** Shared by all handlers of one server: logging and the shutdown signal. */
export interface ServerDeps {
  log: Logger;
  shutdown: AbortSignal;
}

/**
 * The signal of one call: aborted by the client's cancel (CANCELLED) or the
 * server's shutdown (UNAVAILABLE). `release` must run when the call ends, so
 * the server-wide shutdown signal does not collect a listener per call.
 */
function callSignal(
  call: ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>,
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

/** Adapts a promise-returning handler to a grpc-js unary handler with error mapping. */
export function unary<Req, Res>(
  deps: ServerDeps,
  method: string,
  fn: (req: Req, ctx: CallContext) => Promise<Res>,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const { signal, release } = callSignal(
      call as ServerUnaryCall<unknown, unknown>,
      deps.shutdown,
    );
    fn(call.request, { log: deps.log, signal }).then(
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
 * the transport's backpressure: the next item is pulled only once the
 * previous one was taken (`write` returned true or `drain` fired).
 */
export function serverStream<Req, Res>(
  deps: ServerDeps,
  method: string,
  fn: (req: Req, ctx: CallContext) => AsyncIterable<Res>,
): handleServerStreamingCall<Req, Res> {
  return (call) => {
    const { signal, release } = callSignal(
      call as ServerWritableStream<unknown, unknown>,
      deps.shutdown,
    );
    void (async () => {
      try {
        for await (const msg of fn(call.request, { log: deps.log, signal })) {
          if (signal.aborted) break;
          if (!call.write(msg)) await drained(call, signal);
        }
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

function drained(call: ServerWritableStream<unknown, unknown>, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off("drain", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    call.on("drain", done);
    signal.addEventListener("abort", done, { once: true });
  });
}
