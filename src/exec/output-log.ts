import { type FileHandle, mkdir, open, rm } from "node:fs/promises";
import { dirname } from "node:path";
import { NotFoundError, OutOfRangeError, throwIfAborted } from "../errors.ts";
import type { ChunkPool } from "../util/chunk-pool.ts";
import { allocWithHeadroom, headroomOf, withHeadroom } from "../util/headroom.ts";
import { Waiters } from "../util/waiters.ts";

/** Largest chunk a reader is handed (the protocol's 1 MiB message limit). */
export const MAX_CHUNK = 1024 * 1024;

/**
 * Reads up to `n` bytes of `f` at `pos` (fewer only at the end of the file);
 * throws when there is none: the caller knew they were there (`what` names the file).
 * With a `pool` (n ≤ pool.size), a chunk of at least a quarter of pool.size is one of
 * its buffers, lent (see ChunkPool); a smaller one is its own buffer (a pooled 1 MiB
 * buffer would be wasted on it).
 */
export async function readChunk(
  f: FileHandle,
  pos: number,
  n: number,
  what: string,
  pool?: ChunkPool,
): Promise<Buffer> {
  // With headroom: the response that carries it is serialized without copying it.
  const lender = pool && n >= pool.size / 4 ? pool : undefined;
  const buf = lender ? lender.buffer() : allocWithHeadroom(n);
  let got = 0;
  try {
    while (got < n) {
      const { bytesRead } = await f.read(buf, got, n - got, pos + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
  } catch (err) {
    lender?.give(buf);
    throw err;
  }
  if (got === 0) {
    lender?.give(buf);
    throw new Error(`${what} is short at ${pos}`);
  }
  if (lender) return lender.lend(buf, got);
  return got === n ? buf : withHeadroom(buf.subarray(0, got), headroomOf(buf));
}

/** A byte budget shared by the output streams of one exec (the on-disk cap). */
export class ByteBudget {
  used = 0;
  constructor(readonly cap: number) {}
  get exhausted(): boolean {
    return this.used >= this.cap;
  }
}

export interface OutputLogOptions {
  /** Bytes kept in memory before older bytes spill to `spillPath`. */
  memoryLimit: number;
  /** File that holds spilled bytes; created only when needed. */
  spillPath: string;
  /** Shared cap: once spent, `append` asks the producer to pause for good. */
  budget: ByteBudget;
  /** Called when spilling fails (bytes stay in memory; the producer stays paused). */
  onError?: (err: unknown) => void;
}

/**
 * An append-only, offset-addressed byte log for one output stream of one exec.
 *
 * Contract:
 * - Every appended byte is kept (memory first, the spill file past
 *   `memoryLimit`) until `dispose()`; nothing is ever dropped or truncated.
 * - `read(offset)` yields exactly the bytes from `offset` on, in chunks of
 *   1..MAX_CHUNK bytes, waits for more while the log is open, and returns once
 *   it has yielded everything up to the end of an ended log. Each reader has
 *   its own cursor. An offset past the end of an ended log throws OutOfRange.
 * - `append` returns false when the producer should pause (disk behind, or the
 *   exec's byte budget spent); `onResume` fires when it may go on.
 */
export class OutputLog {
  private _length = 0;
  private _ended = false;
  private disposed = false;
  /** In-memory chunks covering [memStart, length). */
  private chunks: Buffer[] = [];
  private memStart = 0;
  private memBytes = 0;
  /** The spill file holds [0, flushed). Invariant: memStart <= flushed or no spill yet. */
  private file: FileHandle | null = null;
  private flushed = 0;
  private flushing = false;
  /** The spill under way (settles when it stopped; `dispose` waits for it). */
  private spilling: Promise<void> = Promise.resolve();
  private paused = false;
  private readonly waiters = new Waiters();
  private resumeListener: (() => void) | null = null;

  constructor(private readonly opts: OutputLogOptions) {}

  get length(): number {
    return this._length;
  }
  get ended(): boolean {
    return this._ended;
  }

  /** Registers the producer's resume callback (called after `append` returned false). */
  onResume(fn: () => void): void {
    this.resumeListener = fn;
  }

  /** Appends bytes; returns false when the producer should pause. */
  append(buf: Buffer): boolean {
    if (this._ended || this.disposed || buf.length === 0) return !this.disposed;
    this.chunks.push(buf);
    this.memBytes += buf.length;
    this._length += buf.length;
    this.opts.budget.used += buf.length;
    this.wake();
    if (this.memBytes > this.opts.memoryLimit) this.startSpill();
    const pause = this.opts.budget.exhausted || this.memBytes > 2 * this.opts.memoryLimit;
    if (pause) this.paused = true;
    return !pause;
  }

  /** Marks the end of the stream; readers finish once they reach `length`. */
  end(): void {
    if (this._ended) return;
    this._ended = true;
    this.wake();
  }

  /**
   * Frees memory and deletes the spill file; pending and later reads fail
   * with NotFound. Resolves once no spill file is left open or on disk (a
   * spill under way stops first; one still opening its file removes it).
   */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    this._ended = true;
    this.chunks = [];
    this.memBytes = 0;
    this.wake();
    await this.spilling;
    const f = this.file;
    this.file = null;
    await f?.close().catch(() => {});
    if (this.flushed > 0 || f) await rm(this.opts.spillPath, { force: true });
  }

  /** Yields the bytes from `offset` on; see the class contract. */
  async *read(offset: number, signal?: AbortSignal): AsyncGenerator<Buffer, void, undefined> {
    let pos = offset;
    for (;;) {
      throwIfAborted(signal);
      if (this.disposed) throw new NotFoundError("exec output is no longer retained");
      if (pos < this._length) {
        const chunk = pos < this.memStart ? await this.readSpilled(pos) : this.readMemory(pos);
        pos += chunk.length;
        yield chunk;
        continue;
      }
      if (this._ended) {
        if (pos > this._length) {
          throw new OutOfRangeError(
            `offset ${pos} is past the end of the stream (${this._length} bytes)`,
          );
        }
        return;
      }
      await this.changed(signal);
    }
  }

  private readMemory(pos: number): Buffer {
    let start = this.memStart;
    let i = 0;
    for (; i < this.chunks.length; i++) {
      const c = this.chunks[i] as Buffer;
      if (pos < start + c.length) break;
      start += c.length;
    }
    const first = (this.chunks[i] as Buffer).subarray(pos - start);
    if (first.length >= MAX_CHUNK) return first.subarray(0, MAX_CHUNK);
    // Coalesce following chunks up to MAX_CHUNK: fewer, larger messages.
    const parts = [first];
    let total = first.length;
    for (let j = i + 1; j < this.chunks.length && total < MAX_CHUNK; j++) {
      const c = this.chunks[j] as Buffer;
      const take = Math.min(c.length, MAX_CHUNK - total);
      parts.push(take === c.length ? c : c.subarray(0, take));
      total += take;
    }
    return parts.length === 1 ? first : Buffer.concat(parts, total);
  }

  private async readSpilled(pos: number): Promise<Buffer> {
    const f = this.file;
    if (!f) throw new NotFoundError("exec output is no longer retained");
    return readChunk(
      f,
      pos,
      Math.min(MAX_CHUNK, this.memStart - pos),
      `spill file ${this.opts.spillPath}`,
    );
  }

  /** Moves the oldest in-memory bytes to the spill file until memory is at half the limit. */
  private async spill(): Promise<void> {
    if (this.flushing || this.disposed) return;
    this.flushing = true;
    try {
      if (!this.file) {
        await mkdir(dirname(this.opts.spillPath), { recursive: true });
        const file = await open(this.opts.spillPath, "w+", 0o600);
        if (this.disposed) {
          // dispose() came while the file was opening: it had no file to close or remove.
          await file.close().catch(() => {});
          await rm(this.opts.spillPath, { force: true });
          return;
        }
        this.file = file;
      }
      const target = this.opts.memoryLimit / 2;
      while (!this.disposed && this.memBytes > target && this.chunks.length > 0) {
        const batch: Buffer[] = [];
        let size = 0;
        for (const c of this.chunks) {
          if (size >= MAX_CHUNK * 4) break;
          batch.push(c);
          size += c.length;
        }
        let written = 0;
        while (written < size) {
          const { bytesWritten } = await this.file.writev(
            written === 0 ? batch : [Buffer.concat(batch).subarray(written)],
            this.flushed + written,
          );
          written += bytesWritten;
        }
        if (this.disposed) return;
        this.flushed += size;
        this.chunks.splice(0, batch.length);
        this.memStart += size;
        this.memBytes -= size;
      }
    } finally {
      this.flushing = false;
    }
    if (this.paused && !this.opts.budget.exhausted && this.memBytes <= this.opts.memoryLimit) {
      this.paused = false;
      this.resumeListener?.();
    }
    if (this.memBytes > this.opts.memoryLimit) this.startSpill();
  }

  private startSpill(): void {
    if (this.flushing || this.disposed) return;
    this.spilling = this.spill().catch((err: unknown) => this.opts.onError?.(err));
  }

  private wake(): void {
    this.waiters.wake();
  }

  private changed(signal?: AbortSignal): Promise<void> {
    return this.waiters.wait(signal);
  }
}
