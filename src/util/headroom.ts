/**
 * Buffers with spare bytes before them, so that a message's header can be
 * written in front of a large payload instead of copying the payload behind
 * it (src/rpc/service-def.ts). An output chunk read from a file is allocated
 * this way: the gRPC response that carries it is then serialized without a
 * copy of its bytes.
 *
 * Contract: the spare bytes belong to whoever serializes the buffer: during
 * that synchronous call when grpc-js copies the serialized message into its
 * frame at once, and until the write completed when the transport writes the
 * frame built there itself (src/server/transport/raw-frames.ts). A buffer
 * without headroom reports 0.
 */

/** Bytes reserved in front: a protobuf tag and length (≤ 11) plus small fields. */
export const HEADROOM = 64;

const spare = new WeakMap<Uint8Array, number>();

/** An uninitialized buffer of `n` bytes with HEADROOM spare bytes before it. */
export function allocWithHeadroom(n: number): Buffer {
  const whole = Buffer.allocUnsafeSlow(HEADROOM + n);
  return withHeadroom(whole.subarray(HEADROOM), HEADROOM);
}

/** `view`, recorded as having `bytes` spare bytes before it in its ArrayBuffer. */
export function withHeadroom(view: Buffer, bytes: number): Buffer {
  spare.set(view, bytes);
  return view;
}

/** The spare bytes before `buf` (0: none known). */
export function headroomOf(buf: Uint8Array): number {
  return spare.get(buf) ?? 0;
}
