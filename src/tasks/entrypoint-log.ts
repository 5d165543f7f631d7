import { constants } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import type { Readable } from "node:stream";
import { NotFoundError, OutOfRangeError, throwIfAborted, UnavailableError } from "../errors.ts";
import { MAX_CHUNK, readChunk } from "../exec/output-log.ts";
import { openRegular } from "../runtime/agent/exec-dir-files.ts";
import type { ExitStatus, OutputFile } from "../runtime/runtime.ts";
import { ChunkPool } from "../util/chunk-pool.ts";
import { Disposal } from "../util/disposal.ts";
import { Waiters } from "../util/waiters.ts";

/** A chunk of an entrypoint stream and the absolute offset of its first byte. */
export interface OffsetChunk {
  offset: number;
  data: Buffer;
}

/**
 * One output stream of a task's entrypoint with bounded retention
 * (PROTOCOL-LATER §5.5): only the newest bytes are kept, offsets stay
 * absolute.
 *
 * Contract of `read(offset)`:
 * - The first chunk starts at max(offset, oldest byte kept), never below
 *   `offset`; every later chunk follows the one before it exactly. Chunks
 *   hold 1..MAX_CHUNK bytes (never empty).
 * - It waits while the stream is open and returns once the stream ended and
 *   every byte up to its end was yielded; `offset` past the end of an ended
 *   stream is OutOfRange.
 * - When retention drops bytes a stream has not yet yielded after its first
 *   chunk, it throws Unavailable (a transient code: the client reopens at the
 *   offset it reached and is rebased there), never a gap inside one stream.
 * - NotFound once disposed.
 */
export interface EntrypointLog {
  /** Bytes written so far (the absolute end). */
  readonly length: number;
  readonly ended: boolean;
  read(offset: number, signal?: AbortSignal): AsyncGenerator<OffsetChunk, void, undefined>;
  dispose(): Promise<void>;
}

/** Where a log's bytes live: what the read loop needs. */
interface Source {
  readonly length: number;
  readonly ended: boolean;
  /** The oldest byte kept; asked again after `chunk` (bytes below it may have been freed). */
  keptFrom(): Promise<number> | number;
  /** Up to `n` bytes at `pos` (pos < length); a file may lend them from `pool` (see ChunkPool). */
  chunk(pos: number, n: number, pool: ChunkPool): Promise<Buffer> | Buffer;
  changed(signal?: AbortSignal): Promise<void>;
}

/** The read loop of the EntrypointLog contract, over any Source. */
async function* readSource(
  src: Source,
  offset: number,
  gone: Disposal,
  signal?: AbortSignal,
): AsyncGenerator<OffsetChunk, void, undefined> {
  let pos = offset;
  let first = true;
  const pool = new ChunkPool(MAX_CHUNK);
  const lost = (kept: number) =>
    new UnavailableError(
      `entrypoint output from offset ${pos} to ${kept} was dropped (retention) while this stream read it; reopen at offset ${pos}`,
    );
  for (;;) {
    throwIfAborted(signal);
    if (gone.disposed) throw new NotFoundError("entrypoint output is no longer retained");
    const kept = await src.keptFrom();
    // Length and end are read after that await: a change during it must not be missed below.
    const len = src.length;
    if (src.ended && pos > len) {
      throw new OutOfRangeError(`offset ${pos} is past the end of the stream (${len} bytes)`);
    }
    if (pos < kept) {
      if (!first) throw lost(kept);
      pos = Math.min(kept, len);
    }
    if (pos < len) {
      let data = await src.chunk(pos, Math.min(MAX_CHUNK, len - pos), pool);
      const after = await src.keptFrom();
      if (after > pos) {
        // Some of these bytes may have been freed while they were read.
        if (!first) throw lost(after);
        data = data.subarray(Math.min(data.length, after - pos));
        pos = Math.min(after, len);
      }
      if (data.length === 0) continue;
      first = false;
      yield { offset: pos, data };
      pos += data.length;
      continue;
    }
    if (src.ended) return;
    pool.drain();
    await gone.race(src.changed(signal)); // no await since `len` was read: no change goes unseen
  }
}

/**
 * A stream the runtime writes into a file itself (a task agent's KEY.out /
 * KEY.err, spawned with SpawnSpec.retain): bytes are read from the file when
 * a reader asks; OutputFile.keptFrom says which are gone.
 */
export class RetainedFileLog implements EntrypointLog, Source {
  private file: Promise<FileHandle> | undefined;
  private readonly gone = new Disposal();

  constructor(private readonly out: OutputFile) {}

  get length(): number {
    return this.out.length;
  }

  get ended(): boolean {
    return this.out.ended;
  }

  read(offset: number, signal?: AbortSignal): AsyncGenerator<OffsetChunk, void, undefined> {
    return readSource(this, offset, this.gone, signal);
  }

  /** Reads waiting for more output now. */
  get waiting(): number {
    return this.gone.waiting;
  }

  keptFrom(): Promise<number> {
    return this.out.keptFrom();
  }

  async chunk(pos: number, n: number, pool: ChunkPool): Promise<Buffer> {
    this.file ??= openRegular(this.out.path, constants.O_RDONLY);
    return readChunk(await this.file, pos, n, `output file ${this.out.path}`, pool);
  }

  changed(signal?: AbortSignal): Promise<void> {
    return this.out.changed(signal);
  }

  async dispose(): Promise<void> {
    if (this.gone.disposed) return;
    this.gone.dispose();
    const f = this.file;
    this.file = undefined;
    await f?.then((h) => h.close()).catch(() => {});
  }
}

/** A descendant still writing after the exit is cut off after at most this many graces. */
const MAX_GRACE_REARMS = 10;

/**
 * A stream read from a pipe (runtimes without a task agent: runsc): the
 * newest bytes stay in memory, at least `retain` of them; older ones are
 * dropped. The pipe is always read (the entrypoint never blocks on its
 * output). The stream ends once the process exited and the pipe reached
 * EOF, or `graceMs` after the exit while descendants hold it (re-armed
 * while bytes flow, at most MAX_GRACE_REARMS times).
 */
export class RingLog implements EntrypointLog, Source {
  private readonly parts: Buffer[] = [];
  /** Absolute offset of parts[0]. */
  private kept = 0;
  private held = 0;
  private _length = 0;
  private _ended = false;
  private readonly waiters = new Waiters();
  private readonly gone = new Disposal();

  constructor(
    pipe: Readable | null,
    exited: Promise<ExitStatus>,
    private readonly retain: number,
    graceMs: number,
  ) {
    if (!pipe) {
      void exited.then(() => this.end());
      return;
    }
    let lastData = 0;
    let drained = false;
    let gone = false;
    pipe.on("data", (b: Buffer) => {
      lastData = Date.now();
      this.append(b);
    });
    const finish = () => {
      drained = true;
      if (gone) this.end();
    };
    pipe.once("end", finish);
    pipe.once("close", finish);
    pipe.on("error", finish);
    void exited.then(() => {
      gone = true;
      if (drained) return this.end();
      let rearms = 0;
      const cut = () => {
        if (this._ended) return;
        if (Date.now() - lastData < graceMs && rearms++ < MAX_GRACE_REARMS) {
          return void setTimeout(cut, graceMs).unref();
        }
        pipe.destroy();
        this.end();
      };
      setTimeout(cut, graceMs).unref();
    });
  }

  get length(): number {
    return this._length;
  }

  get ended(): boolean {
    return this._ended;
  }

  private append(b: Buffer): void {
    if (this._ended || b.length === 0) return;
    this.parts.push(b);
    this.held += b.length;
    this._length += b.length;
    // Drop whole parts while what is left still holds `retain` bytes, then the
    // head's older bytes: exactly the newest `retain` stay (a pipe read may be 64 KiB).
    for (let head = this.parts[0]; head && this.held - head.length >= this.retain; ) {
      this.parts.shift();
      this.held -= head.length;
      this.kept += head.length;
      head = this.parts[0];
    }
    const over = this.held - this.retain;
    const head = this.parts[0];
    if (over > 0 && head) {
      this.parts[0] = head.subarray(over);
      this.held -= over;
      this.kept += over;
    }
    this.waiters.wake();
  }

  private end(): void {
    if (this._ended) return;
    this._ended = true;
    this.waiters.wake();
  }

  read(offset: number, signal?: AbortSignal): AsyncGenerator<OffsetChunk, void, undefined> {
    return readSource(this, offset, this.gone, signal);
  }

  /** Reads waiting for more output now. */
  get waiting(): number {
    return this.gone.waiting;
  }

  keptFrom(): number {
    return this.kept;
  }

  /** Up to `n` bytes at `pos`, from one part. */
  chunk(pos: number, n: number): Buffer {
    let at = this.kept;
    for (const p of this.parts) {
      if (pos < at + p.length) return p.subarray(pos - at, Math.min(p.length, pos - at + n));
      at += p.length;
    }
    return Buffer.alloc(0);
  }

  changed(signal?: AbortSignal): Promise<void> {
    return this.waiters.wait(signal);
  }

  async dispose(): Promise<void> {
    this.gone.dispose();
    this.parts.length = 0;
  }
}
