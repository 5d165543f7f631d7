import { gunzip, inflate } from "node:zlib";
import { type ServerInterceptingCallInterface, status } from "@grpc/grpc-js";

/** A failed inflation, as grpc-js expects a rejected decompression: a status. */
interface InflateFailure {
  code: status;
  details: string;
}

type Decompress = (message: Buffer, encoding: string) => Buffer | Promise<Buffer>;

/**
 * Puts the edge's rules in front of grpc-js's inflation of compressed
 * request messages (`grpc-encoding: gzip|deflate`), for one call:
 * - a message is inflated only when `allowed()` (the call's token was
 *   accepted, see ./edge.ts); otherwise it is refused, UNIMPLEMENTED, before
 *   a byte is inflated (services open to anyone take no compressed bodies);
 * - inflation stops past `maxBytes`: RESOURCE_EXHAUSTED;
 * - corrupt compressed data is INVALID_ARGUMENT (grpc-js says INTERNAL).
 *
 * grpc-js has no option for this: the hook replaces the `decompressMessage`
 * method of the call's innermost (grpc-js-private) object. Returns false when
 * a grpc-js upgrade moved it; grpc-js's own inflation (capped at the receive
 * limit) then applies, and the token is still checked before any message is
 * read.
 */
export function guardInflation(
  call: ServerInterceptingCallInterface,
  allowed: () => boolean,
  maxBytes: number,
): boolean {
  let base = call as unknown as { nextCall?: unknown; decompressMessage?: Decompress };
  while (base.nextCall) base = base.nextCall as typeof base;
  const original = base.decompressMessage;
  if (typeof original !== "function") return false;
  base.decompressMessage = (message, encoding) => {
    if (encoding !== "gzip" && encoding !== "deflate")
      return original.call(base, message, encoding);
    if (!allowed()) {
      const refused: InflateFailure = {
        code: status.UNIMPLEMENTED,
        details: "compressed requests need an authenticated call",
      };
      return Promise.reject(refused);
    }
    // grpc-js's framing: 1 flag byte and a 4-byte length before the message.
    return inflateCapped(message.subarray(5), encoding, maxBytes);
  };
  return true;
}

/** Inflates `data` (gzip, or zlib for gRPC's "deflate"), failing past `maxBytes`. */
function inflateCapped(data: Buffer, encoding: "gzip" | "deflate", maxBytes: number) {
  return new Promise<Buffer>((resolve, reject) => {
    const done = (err: Error | null, out: Buffer) => {
      if (!err) return resolve(out);
      const failure: InflateFailure =
        (err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE"
          ? {
              code: status.RESOURCE_EXHAUSTED,
              details: `a request message inflates to more than ${maxBytes} bytes`,
            }
          : {
              code: status.INVALID_ARGUMENT,
              details: `malformed request message: its ${encoding} data is corrupt`,
            };
      reject(failure);
    };
    if (encoding === "gzip") gunzip(data, { maxOutputLength: maxBytes }, done);
    else inflate(data, { maxOutputLength: maxBytes }, done);
  });
}
