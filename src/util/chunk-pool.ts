import { allocWithHeadroom, HEADROOM, withHeadroom } from "./headroom.ts";

/**
 * Output chunks whose memory is used again once their consumer is done with
 * them. Every 1 MiB buffer allocated for a chunk counts as external memory to
 * V8, which starts a full (mark-compact) collection after a few MiB of it;
 * a stream read at hundreds of MB/s into fresh buffers spent most of the
 * router's CPU in those collections (BENCHMARKS.md, "GC and the write queue").
 *
 * Contract:
 * - A pool belongs to one reader; `lend` hands out a view of one of its
 *   buffers (with HEADROOM spare bytes in front, see ./headroom.ts).
 * - A consumer that is done with a lent chunk, and holds no view of its
 *   memory any more, may call `recycle(chunk)`; the buffer then serves a
 *   later chunk. A chunk that is never recycled is simply garbage: consumers
 *   that keep chunks need do nothing.
 * - `drain` drops the pool's idle buffers and those given back while the
 *   reader waits (a reader waiting for more output holds none).
 */
export class ChunkPool implements BufferHome {
  private readonly idle: Buffer[] = [];
  /** Drained and not used since: buffers given back are dropped (an idle reader holds none). */
  private parked = false;

  /** `size`: the largest chunk; `keep`: idle buffers kept for reuse. */
  constructor(
    readonly size: number,
    private readonly keep = 2,
  ) {}

  /** A buffer of `size` bytes (with headroom) to read a chunk into; lend a view of it. */
  buffer(): Buffer {
    this.parked = false;
    return this.idle.pop() ?? allocWithHeadroom(this.size);
  }

  /** The first `n` bytes of `buf` (from `buffer()`) as a chunk that `recycle` returns here. */
  lend(buf: Buffer, n: number): Buffer {
    // Always a new view: a stale `recycle` of an earlier chunk must not return this one.
    const view = withHeadroom(buf.subarray(0, n), HEADROOM);
    lendView(view, this, buf);
    return view;
  }

  /** Takes back a buffer nobody uses (see `recycle`), or drops it when enough are idle. */
  give(buf: Buffer): void {
    if (!this.parked && this.idle.length < this.keep) this.idle.push(buf);
  }

  /** Drops the idle buffers, and those given back until the next `buffer()`. */
  drain(): void {
    this.idle.length = 0;
    this.parked = true;
  }
}

/** Where a lent buffer goes back to (a ChunkPool, a MessagePool). */
export interface BufferHome {
  /** Takes back `buf`, which nobody uses any more (or drops it). */
  give(buf: Buffer): void;
}

const lent = new WeakMap<Uint8Array, { pool: BufferHome; buf: Buffer }>();

/** Records `view` (of `buf`'s memory) as lent: `recycle(view)` gives `buf` back to `home`. */
export function lendView(view: Uint8Array, home: BufferHome, buf: Buffer): void {
  lent.set(view, { pool: home, buf });
}

/**
 * Returns a chunk lent by a pool (ChunkPool.lend, lendView) to its pool (a
 * no-op for any other buffer, and for a chunk already recycled). The caller
 * must not touch the chunk's memory afterwards.
 */
export function recycle(chunk: Uint8Array): void {
  const l = lent.get(chunk);
  if (!l) return;
  lent.delete(chunk);
  l.pool.give(l.buf);
}
