import { open } from "node:fs/promises";
import { OutOfRangeError } from "../errors.ts";
import { ChunkPool } from "../util/chunk-pool.ts";

/**
 * Bytes per stdin stream `data` message at most. The JS SDK sends 256 KiB
 * (STREAMING_STDIN_CHUNK_SIZE); any size keeps every guarantee, and 1 MiB cut
 * a 256 MiB `taskrouter cp` upload by ~60 ms (a fresh process runs the
 * per-message code cold: docs/DECISIONS.md, "Downloads written around the
 * page cache", its last bullets).
 */
export const STDIN_CHUNK = 1024 * 1024;
/** Bytes read per chunk from a file source: one `data` message each (no more than STDIN_CHUNK, or it is cut and copied). */
const FILE_CHUNK = STDIN_CHUNK;
/** Idle read buffers a file source keeps (16 MiB): grpc-js queues 16 messages. */
const FILE_BUFFERS = 16;
/** What a one-shot source keeps for replay after a cut (see `StdinInput`). */
export const DEFAULT_REPLAY = 64 * 1024 * 1024;

/** A source that can be read again from any offset (a file, bytes in memory). */
export interface SeekableSource {
  readFrom(offset: number): AsyncIterable<Uint8Array>;
}

/**
 * What `writeStdinStream` sends. A resume re-reads from the server's
 * `num_bytes_written`, so: a `SeekableSource` or a function of the offset is
 * read again from there; bytes in memory are sliced; a one-shot iterable (a
 * Readable, a generator) is read once and its last `replayBytes` are kept,
 * and a resume further back than that fails with OutOfRange.
 */
export type StdinInput =
  | SeekableSource
  | ((offset: number) => AsyncIterable<Uint8Array>)
  | Uint8Array
  | AsyncIterable<Uint8Array>;

/**
 * A seekable source reading a local file from any offset (opened again per
 * attempt). Its chunks are lent from a pool (src/util/chunk-pool.ts) with
 * headroom: the upload serializes each in place and recycles it once
 * written, so a file streams without a fresh buffer per chunk.
 */
export function fileSource(path: string): SeekableSource {
  return {
    async *readFrom(offset) {
      const file = await open(path, "r");
      const pool = new ChunkPool(FILE_CHUNK, FILE_BUFFERS);
      try {
        for (let pos = offset; ; ) {
          const buf = pool.buffer();
          const { bytesRead } = await file.read(buf, 0, FILE_CHUNK, pos);
          if (bytesRead === 0) return;
          pos += bytesRead;
          yield pool.lend(buf, bytesRead);
        }
      } finally {
        await file.close();
      }
    },
  };
}

/** `source` as a function of the offset (see StdinInput). */
export function reader(
  source: StdinInput,
  replayBytes: number,
): (offset: number) => AsyncIterable<Uint8Array> {
  if (typeof source === "function") return source;
  if (source instanceof Uint8Array) {
    return async function* (offset) {
      if (offset < source.length) yield source.subarray(offset);
    };
  }
  if ("readFrom" in source) return (offset) => source.readFrom(offset);
  return replaying(source, replayBytes);
}

/**
 * A one-shot iterable made resumable: it is pulled once (one pull at a time,
 * shared by every attempt, so an abandoned attempt loses nothing), and the
 * last `limit` bytes pulled are kept so an attempt can start anywhere in them.
 */
function replaying(
  source: AsyncIterable<Uint8Array>,
  limit: number,
): (offset: number) => AsyncIterable<Uint8Array> {
  const it = source[Symbol.asyncIterator]();
  const kept: Uint8Array[] = [];
  let keptFrom = 0; // offset of kept[0]
  let pulled = 0; // bytes pulled from `it`
  let ended = false;
  let inflight: Promise<void> | undefined;
  const pull = () => {
    inflight ??= it.next().then((r) => {
      inflight = undefined;
      if (r.done) ended = true;
      else if (r.value.length > 0) {
        kept.push(r.value);
        pulled += r.value.length;
        while (kept.length > 1 && pulled - keptFrom - (kept[0]?.length ?? 0) >= limit) {
          keptFrom += (kept.shift() as Uint8Array).length;
        }
      }
    });
    return inflight;
  };
  /** The kept bytes from `pos` to the end of the chunk holding it. */
  const at = (pos: number): Uint8Array => {
    let start = pulled;
    for (let i = kept.length - 1; i >= 0; i--) {
      const c = kept[i] as Uint8Array;
      start -= c.length;
      if (start <= pos) return c.subarray(pos - start);
    }
    throw new OutOfRangeError(
      `cannot resume the upload at byte ${pos}: only bytes ${keptFrom}..${pulled} of this one-shot source are kept`,
    );
  };
  return async function* (offset) {
    let pos = offset;
    if (pos > pulled)
      throw new OutOfRangeError(`resume offset ${pos} is past the ${pulled} bytes read`);
    for (;;) {
      while (pos < pulled) {
        const c = at(pos);
        pos += c.length;
        yield c;
      }
      if (ended) return;
      await pull();
    }
  };
}
