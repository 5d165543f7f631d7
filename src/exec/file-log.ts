import { constants } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { NotFoundError, OutOfRangeError, throwIfAborted } from "../errors.ts";
import { openRegular } from "../runtime/agent/exec-dir-files.ts";
import type { OutputFile, OutputReader } from "../runtime/runtime.ts";
import { ChunkPool } from "../util/chunk-pool.ts";
import { Disposal } from "../util/disposal.ts";
import { MAX_CHUNK, readChunk } from "./output-log.ts";

/**
 * The output log of a stream that the runtime writes into a file itself
 * (Proc.output, a task agent's KEY.out / KEY.err): the same reading contract
 * as OutputLog (`read(offset)` yields exactly the bytes from `offset` on in
 * chunks of 1..MAX_CHUNK, waits while the stream is open, OutOfRange past
 * the end of an ended one, NotFound once disposed), with no copy of the
 * bytes in memory: each chunk is read from the file when a reader asks.
 * The file is opened as a regular file only, never through a symlink
 * (exec-dir-files.ts: a task can plant anything in its exec directory);
 * anything else fails the read with FailedPrecondition.
 */
export class FileLog {
  private file: Promise<FileHandle> | undefined;
  private disposed = false;
  /** Wakes readers waiting for more at dispose. */
  private readonly gone = new Disposal();

  constructor(private readonly out: OutputFile) {}

  get length(): number {
    return this.out.length;
  }

  get ended(): boolean {
    return this.out.ended;
  }

  /** Reads waiting for more output now (each leaves nothing registered once it resumed). */
  get waiting(): number {
    return this.gone.waiting;
  }

  /** Large chunks are lent from a pool of this reader's (see readChunk, ChunkPool). */
  async *read(offset: number, signal?: AbortSignal): AsyncGenerator<Buffer, void, undefined> {
    const reader = this.out.reader(offset);
    try {
      yield* this.chunks(offset, reader, signal, new ChunkPool(MAX_CHUNK));
    } finally {
      reader.done();
    }
  }

  private async *chunks(
    offset: number,
    reader: OutputReader,
    signal: AbortSignal | undefined,
    pool: ChunkPool,
  ): AsyncGenerator<Buffer, void, undefined> {
    let pos = offset;
    for (;;) {
      throwIfAborted(signal);
      if (this.disposed) throw new NotFoundError("exec output is no longer retained");
      const len = this.out.length;
      if (pos < len) {
        const chunk = await this.readAt(pos, Math.min(MAX_CHUNK, len - pos), pool);
        pos += chunk.length;
        yield chunk;
        // Delivered (the consumer asked for the next chunk): the runtime may drop it from memory.
        reader.at(pos);
        continue;
      }
      if (this.out.ended) {
        if (pos > this.out.length) {
          throw new OutOfRangeError(
            `offset ${pos} is past the end of the stream (${this.out.length} bytes)`,
          );
        }
        if (pos === this.out.length) return;
        continue;
      }
      pool.drain();
      await this.gone.race(this.out.changed(signal));
    }
  }

  private async readAt(pos: number, n: number, pool: ChunkPool): Promise<Buffer> {
    this.file ??= openRegular(this.out.path, constants.O_RDONLY);
    const chunk = await readChunk(await this.file, pos, n, `output file ${this.out.path}`, pool);
    if (this.disposed) throw new NotFoundError("exec output is no longer retained");
    return chunk;
  }

  /** Closes the file; pending and later reads fail with NotFound (the runtime removes the file). */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    this.gone.dispose();
    const f = this.file;
    this.file = undefined;
    await f?.then((h) => h.close()).catch(() => {});
  }
}
