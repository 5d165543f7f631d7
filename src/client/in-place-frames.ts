import { createRequire } from "node:module";
import { frameInHeadroom } from "../rpc/frame.ts";

/**
 * Request messages framed in their own headroom instead of behind grpc-js's
 * copy. grpc-js frames every request message by copying it into a fresh
 * buffer behind the 5-byte gRPC prefix: for a 16 MiB stdin write that is a
 * 16 MiB allocation and copy per call, and the churn of those buffers kept
 * the client in full collections (BENCHMARKS.md and docs/DECISIONS.md,
 * "Stdin without copies on either side"). A message serialized into a buffer lent with `frameInPlace`
 * (a staged stdin write: src/util/headroom.ts gives the spare bytes in front)
 * gets its prefix written into those spare bytes instead.
 *
 * grpc-js has no API for it: the step is its CompressionFilter's
 * `sendMessage`, reached through its build path and wrapped once; a filter
 * that is not the identity (compressing), a message over the send limit,
 * any message not lent and any call of another shape go through grpc-js's
 * own code unchanged. When the class or its fields are not found (a grpc-js
 * upgrade moved them) `installInPlaceFraming` returns false and every
 * message is copied as before; a test (test/in-place-frames.test.ts) fails
 * when the fast path is lost.
 *
 * Ownership: grpc-js keeps the framed message (then: the lent memory) until
 * the call ended, for a transparent retry, and a call answered early (an
 * error status before the whole request went out) may go on sending it
 * after its callback ran. So only memory that stays untouched until the
 * call's end may be lent, and reused only after a success: a unary call's
 * request (RouterClient.writeStdin drops its buffer after a failed attempt).
 * Stream messages are lent only on the upload channel (./channels.ts,
 * `uploadChannel`): elsewhere grpc-js may acknowledge a stream write before
 * it sent it (the message fits its retry buffer); there it keeps no retry
 * buffer and acknowledges a write of a call that has not failed once its
 * bytes went to the socket; a stdin stream reuses its memory only then, and
 * none after a failure (grpc-js reports no write errors to the callback).
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
  sendCompression?: unknown;
  maxSendMessageLength?: unknown;
}

type Send = (this: FilterShape, m: unknown, ...rest: unknown[]) => Promise<unknown>;

/**
 * Wraps grpc-js's CompressionFilter once per process. Returns whether
 * in-place framing is available (false: grpc-js's internals were not found).
 */
export function installInPlaceFraming(): boolean {
  installed ??= install();
  return installed;
}

function install(): boolean {
  let Filter: (new (options: object, shared: object) => FilterShape) | undefined;
  try {
    const require = createRequire(import.meta.url);
    Filter = require("@grpc/grpc-js/build/src/compression-filter.js").CompressionFilter;
  } catch {
    return false;
  }
  const proto = Filter?.prototype as { sendMessage?: unknown } | undefined;
  const original = proto?.sendMessage;
  if (!Filter || !proto || typeof original !== "function") return false;
  // A filter of a channel without options: its handler's class is grpc-js's identity.
  let identity: unknown;
  try {
    const probe = new Filter({}, {});
    if (typeof probe.maxSendMessageLength !== "number") return false;
    identity = (probe.sendCompression as { constructor?: unknown } | undefined)?.constructor;
  } catch {
    return false;
  }
  if (typeof identity !== "function") return false;
  const send = original as Send;
  const isIdentity = (h: unknown) => h instanceof (identity as new () => unknown);
  proto.sendMessage = function (this: FilterShape, pending: unknown, ...rest: unknown[]) {
    // Any other shape of call than grpc-js 1.x's goes to grpc-js untouched.
    if (rest.length > 0 || !(pending instanceof Promise)) return send.call(this, pending, ...rest);
    return pending.then((m: WriteObject) => {
      const out = isIdentity(this.sendCompression) ? inPlace(this, m) : undefined;
      if (!out) return send.call(this, Promise.resolve(m));
      framed++;
      return m.flags === undefined ? { message: out } : { message: out, flags: m.flags };
    });
  };
  return true;
}

/** The message of `m` behind its gRPC prefix, written in its headroom; undefined: grpc-js frames it. */
function inPlace(filter: FilterShape, m: WriteObject): Buffer | undefined {
  const message = m?.message;
  if (!Buffer.isBuffer(message) || !lent.has(message.buffer)) return undefined;
  const limit = filter.maxSendMessageLength;
  if (typeof limit !== "number" || (limit !== -1 && message.length > limit)) return undefined;
  const out = frameInHeadroom(message);
  return out && Buffer.from(out.buffer, out.byteOffset, out.byteLength);
}
