import type { ServerHttp2Stream } from "node:http2";
import { grpcFrame } from "../../rpc/frame.ts";
import { recycle } from "../../util/chunk-pool.ts";

/**
 * Server-stream responses written to the call's HTTP/2 stream as complete
 * gRPC frames, without grpc-js's copy of each message behind its 5-byte
 * prefix. That copy allocated a fresh buffer per message (1 MiB for an
 * output chunk), and the churn of those buffers kept V8 doing a full
 * collection every few tens of milliseconds (BENCHMARKS.md, "GC and the
 * write queue").
 *
 * grpc-js has no API for it: the stream is reached through grpc-js's
 * internals (the call's interceptor chain, `nextCall`, down to the object
 * holding `stream`), checked by shape. When they are not found, `streamOf`
 * returns undefined and responses go through grpc-js as before; a test
 * (test/raw-frames.test.ts) fails when a grpc-js upgrade loses the fast path.
 */

/** How a server stream's responses become frames, and when their memory is free. */
export interface RawFraming<Res> {
  /**
   * The whole gRPC message frame of `res` (flag byte, big-endian length,
   * serialized message). It may share memory with `res`: that memory must
   * stay untouched until `release(res)`.
   */
  frame(res: Res): Uint8Array;
  /**
   * Called once the transport is done with `res`: after its write completed.
   * A response whose write did not complete (the call ended first) is never
   * released: its memory may still be referenced, and is left to the GC.
   */
  release(res: Res): void;
}

/**
 * Framing of responses that carry an output chunk in `data`: the frame is
 * built in the chunk's headroom by `serialize` (src/rpc/service-def.ts) and
 * the chunk goes back to its reader's pool once written (src/util/chunk-pool.ts).
 */
export function chunkFraming<Res extends { data: Uint8Array }>(
  serialize: (res: Res) => Uint8Array,
): RawFraming<Res> {
  return {
    frame: (res) => grpcFrame(serialize(res)),
    release: (res) => recycle(res.data),
  };
}

/** The HTTP/2 stream under a grpc-js server call, once its response headers are out. */
export function streamOf(call: unknown): ServerHttp2Stream | undefined {
  let c = (call as { call?: unknown }).call;
  for (let depth = 0; c && typeof c === "object" && depth < 8; depth++) {
    const stream = (c as { stream?: unknown }).stream;
    if (stream) return isHttp2Stream(stream) ? stream : undefined;
    c = (c as { nextCall?: unknown }).nextCall;
  }
  return undefined;
}

function isHttp2Stream(s: unknown): s is ServerHttp2Stream {
  const x = s as Partial<ServerHttp2Stream>;
  return typeof x.write === "function" && typeof x.respond === "function" && "headersSent" in x;
}
