import { headroomOf } from "../util/headroom.ts";

/**
 * gRPC message frames (flag byte, 4-byte big-endian length, message), built
 * in front of a message when it has the headroom (src/util/headroom.ts):
 * the server's raw output frames and the client's in-place request frames
 * share this.
 */

/** `message` behind an uncompressed frame prefix written in its headroom; undefined without 5 spare bytes. */
export function frameInHeadroom(message: Uint8Array): Uint8Array | undefined {
  if (headroomOf(message) < 5) return undefined;
  const out = new Uint8Array(message.buffer, message.byteOffset - 5, message.byteLength + 5);
  writePrefix(out, message.byteLength);
  return out;
}

/** `message` behind an uncompressed frame prefix: in its own headroom when there is room, else copied. */
export function grpcFrame(message: Uint8Array): Uint8Array {
  const inPlace = frameInHeadroom(message);
  if (inPlace) return inPlace;
  const out = new Uint8Array(message.byteLength + 5);
  writePrefix(out, message.byteLength);
  out.set(message, 5);
  return out;
}

function writePrefix(out: Uint8Array, n: number): void {
  out[0] = 0; // not compressed
  new DataView(out.buffer, out.byteOffset, 5).setUint32(1, n);
}
