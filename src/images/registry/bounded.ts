import { Transform } from "node:stream";

/**
 * Reads the body of `res` into memory, never more than `max` bytes. A body
 * that says (Content-Length) or turns out to be longer is cancelled and
 * `tooBig()` is thrown, after at most one chunk past `max` was read; errors
 * reading the body are thrown as they come (the caller decides whether a
 * retry may cure them).
 */
export async function readBounded(
  res: Response,
  max: number,
  tooBig: () => Error,
): Promise<Buffer> {
  const declared = Number(res.headers.get("content-length") ?? "0");
  if (declared > max) {
    await res.body?.cancel().catch(() => undefined);
    throw tooBig();
  }
  if (!res.body) return Buffer.alloc(0);
  const reader = res.body.getReader();
  const parts: Buffer[] = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.byteLength;
    if (n > max) {
      await reader.cancel().catch(() => undefined);
      throw tooBig();
    }
    parts.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
  }
  return Buffer.concat(parts, n);
}

/**
 * A pass-through that counts the bytes and fails with `tooBig()` as soon as
 * more than `max` have come (before passing the chunk on), so a stream is
 * never read past what it announced.
 */
export function atMost(max: number, tooBig: () => Error, onChunk?: (b: Buffer) => void): Transform {
  let n = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      n += chunk.length;
      if (n > max) return cb(tooBig());
      onChunk?.(chunk);
      cb(null, chunk);
    },
  });
}
