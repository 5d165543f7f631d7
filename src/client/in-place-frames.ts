import { createRequire } from "node:module";
import { headroomOf } from "../util/headroom.ts";

/**
 * Request messages framed in their own headroom instead of behind grpc-js's
 * copy. grpc-js frames every request message by copying it into a fresh
 * buffer behind the 5-byte gRPC prefix: for a 16 MiB stdin write that is a
 * 16 MiB allocation and copy per call, and the churn of those buffers kept
 * the client in full collections (BENCHMARKS.md, "Stdin without copies on
 * either side"). A message serialized into a buffer lent with `frameInPlace`
 * (a staged stdin write: src/util/headroom.ts gives the spare bytes in front)
 * gets its prefix written into those spare bytes instead.
 *
 * grpc-js has no API for it: the step is its CompressionFilter's
 * `sendMessage`, reached through its build path and wrapped once; a filter
 * that is not the identity (compressing), a message over the send limit or
 * any message not lent goes through grpc-js's own code unchanged. When the
 * class is not found (a grpc-js upgrade moved it) `installInPlaceFraming`
 * returns false and every message is copied as before; a test
 * (test/in-place-frames.test.ts) fails when the fast path is lost.
 *
 * Ownership: grpc-js keeps the framed message (then: the lent memory) until
 * the call ended, for a transparent retry. So only memory that stays
 * untouched until the call's end may be lent: a unary call's request, its
 * lease ended after the call settled. Stream messages are never lent (grpc-js
 * acknowledges their writes before it sent them).
 */

const lent = new WeakSet<ArrayBufferLike>();
let installed: boolean | undefined;
let framed = 0;

/**
 * Lends `buf`'s memory: a message serialized into it (with ≥ 5 spare bytes
 * in front) is framed there. The returned function ends the lease; call it
 * only after the call that carried the message settled.
 */
export function frameInPlace(buf: Uint8Array): () => void {
  lent.add(buf.buffer);
  return () => lent.delete(buf.buffer);
}

/** Messages framed in place so far (for tests and benches). */
export function framedInPlace(): number {
  return framed;
}

interface WriteObject {
  message: Buffer;
  flags?: number;
}

interface FilterShape {
  sendCompression?: { constructor?: { name?: string } };
  maxSendMessageLength?: number;
}

/**
 * Wraps grpc-js's CompressionFilter once per process. Returns whether
 * in-place framing is available (false: grpc-js's internals were not found).
 */
export function installInPlaceFraming(): boolean {
  installed ??= install();
  return installed;
}

function install(): boolean {
  let proto: { sendMessage?: unknown } | undefined;
  try {
    const require = createRequire(import.meta.url);
    const mod = require("@grpc/grpc-js/build/src/compression-filter.js") as {
      CompressionFilter?: { prototype?: { sendMessage?: unknown } };
    };
    proto = mod.CompressionFilter?.prototype;
  } catch {
    return false;
  }
  const original = proto?.sendMessage;
  if (!proto || typeof original !== "function") return false;
  const send = original as (this: FilterShape, m: Promise<WriteObject>) => Promise<WriteObject>;
  proto.sendMessage = async function (this: FilterShape, pending: Promise<WriteObject>) {
    const m = await pending;
    const out = inPlace(this, m.message);
    if (!out) return send.call(this, Promise.resolve(m));
    framed++;
    return m.flags === undefined ? { message: out } : { message: out, flags: m.flags };
  };
  return true;
}

/** `message` behind its gRPC prefix, written in its headroom; undefined: grpc-js frames it. */
function inPlace(filter: FilterShape, message: Buffer): Buffer | undefined {
  if (!lent.has(message.buffer) || headroomOf(message) < 5) return undefined;
  if (filter.sendCompression?.constructor?.name !== "IdentityHandler") return undefined;
  const limit = filter.maxSendMessageLength;
  if (typeof limit !== "number" || (limit !== -1 && message.length > limit)) return undefined;
  const out = Buffer.from(message.buffer, message.byteOffset - 5, message.length + 5);
  out[0] = 0; // not compressed
  out.writeUInt32BE(message.length, 1);
  return out;
}
