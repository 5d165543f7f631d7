import type { BufferHome } from "./chunk-pool.ts";
import { HEADROOM, withHeadroom } from "./headroom.ts";

/** Buffers are allocated in multiples of this (messages of one size share one buffer size). */
const GRAIN = 4096;

/**
 * Large buffers shared by many calls: a server's request messages
 * assembled from the network (src/server/transport/pooled-decoder.ts), a
 * client's stdin data staged for serialization (src/client). A 16 MiB stdin
 * write used to be a fresh 16 MiB buffer each time on both sides: fresh
 * memory to fault in, and external memory that drives V8's full
 * collections (BENCHMARKS.md, "Receiving without fresh buffers").
 *
 * Contract:
 * - `take(n)` returns a buffer of at least `n` bytes (uninitialized), whole
 *   in its own ArrayBuffer: an idle one no larger than 2n, or a new one.
 * - `give(buf)` takes back a buffer from `take` that nobody uses any more.
 *   A taken buffer that is never given back is simply garbage.
 * - Idle buffers are bounded (`maxIdle` buffers, `maxIdleBytes` in all:
 *   a stream's window of 1 MiB chunks, or a few 16 MiB writes) and
 *   dropped after `idleMs` to `2 × idleMs` without a `take` or `give`.
 */
export class MessagePool implements BufferHome {
  private readonly idle: Buffer[] = [];
  private idleBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private used = false;
  private taken = 0;
  private fresh = 0;
  private given = 0;

  constructor(
    private readonly maxIdle = 64,
    private readonly maxIdleBytes = 64 * 1024 * 1024,
    private readonly idleMs = 2000,
  ) {}

  take(n: number): Buffer {
    this.touch();
    this.taken++;
    let best = -1;
    for (let i = 0; i < this.idle.length; i++) {
      const len = (this.idle[i] as Buffer).length;
      if (len >= n && len <= 2 * n && (best < 0 || len < (this.idle[best] as Buffer).length)) {
        best = i;
      }
    }
    if (best < 0) {
      this.fresh++;
      return Buffer.allocUnsafeSlow(Math.ceil(n / GRAIN) * GRAIN);
    }
    const [buf] = this.idle.splice(best, 1) as [Buffer];
    this.idleBytes -= buf.length;
    return buf;
  }

  give(buf: Buffer): void {
    this.given++;
    if (this.idle.length >= this.maxIdle || this.idleBytes + buf.length > this.maxIdleBytes) return;
    this.idle.push(buf);
    this.idleBytes += buf.length;
    this.touch();
  }

  /**
   * `data` copied into a buffer of the pool, with `headroom` spare bytes in
   * front (a serializer writes the message's other fields and the bytes
   * field's header there, src/util/headroom.ts: size it for them).
   * `release()` gives the buffer back once nothing uses the copy (a second
   * call does nothing).
   */
  stage(data: Uint8Array, headroom = HEADROOM): { view: Buffer; release: () => void } {
    const buf = this.take(headroom + data.length);
    buf.set(data, headroom);
    const view = withHeadroom(buf.subarray(headroom, headroom + data.length), headroom);
    let released = false;
    return {
      view,
      release: () => {
        if (!released) this.give(buf);
        released = true;
      },
    };
  }

  /** Buffers taken so far, how many of them were new, and buffers given back. */
  get counts(): { taken: number; fresh: number; given: number } {
    return { taken: this.taken, fresh: this.fresh, given: this.given };
  }

  /** Buffers kept for reuse, and their bytes. */
  get stats(): { buffers: number; bytes: number } {
    return { buffers: this.idle.length, bytes: this.idleBytes };
  }

  /**
   * Marks the pool used. A timer runs while buffers are idle: a period of
   * `idleMs` without any use drops them (no clock read per take or give).
   */
  private touch(): void {
    this.used = true;
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (!this.used || this.idle.length === 0) {
        this.idle.length = 0;
        this.idleBytes = 0;
        clearInterval(this.timer);
        this.timer = undefined;
      }
      this.used = false;
    }, this.idleMs);
    this.timer.unref();
  }
}
