import { close, constants, open, write, writev } from "node:fs";
import { Writable } from "node:stream";
import type { StdinState } from "../runtime.ts";

/**
 * How far the bytes the router has taken may run ahead of what the command
 * has read before a write is answered: the client's next write overlaps the
 * command reading this one, and a stalled command holds at most this much
 * unread (on disk, in KEY.in).
 */
export const STDIN_WINDOW = 32 * 1024 * 1024;

/**
 * The stdin of an agent's exec as a Writable: each write is appended to
 * KEY.in (the agent copies it from there into the command's stdin) and
 * announced with `in KEY LEN`; its callback runs once the command is at most
 * STDIN_WINDOW behind (`inpos` events), or the command is gone. `end()`
 * calls `onEof` (the EOF is journaled for a router that adopts the exec)
 * and sends `eof KEY LEN`. Bytes written after the command is gone are dropped.
 */
export class AgentStdin extends Writable {
  private fd: Promise<number> | undefined;
  private len: number;
  private pos = 0;
  private waiting: (() => void) | undefined;
  /** The append in progress (settled when none is). */
  private appending: Promise<void> = Promise.resolve();
  private gone = false;

  constructor(
    private readonly path: string,
    private readonly send: (fields: string[]) => void,
    private readonly key: string,
    start: StdinState,
    private readonly onEof: () => void,
  ) {
    super({ highWaterMark: 1 });
    this.len = start.written;
    this.pos = start.written;
  }

  /** The agent's `inpos`: the command has read `n` bytes. */
  progress(n: number): void {
    if (n > this.pos) this.pos = n;
    if (this.waiting && this.len - this.pos <= STDIN_WINDOW) this.release();
  }

  /** The command no longer reads (its stdin closed, or it was reaped). */
  markGone(): void {
    this.gone = true;
    this.release();
  }

  private release(): void {
    const w = this.waiting;
    this.waiting = undefined;
    w?.();
  }

  private file(): Promise<number> {
    this.fd ??= new Promise((resolve, reject) =>
      // Created by the first write (the agent opens it at the first `in`).
      open(this.path, constants.O_RDWR | constants.O_CREAT, 0o600, (err, fd) =>
        err ? reject(err) : resolve(fd),
      ),
    );
    return this.fd;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this._writev([{ chunk }], cb);
  }

  /** Writes queued while the previous write ran go out together: one `writev`, one `in`. */
  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    if (this.gone) {
      cb();
      return;
    }
    const append = this.append(chunks.map((c) => c.chunk));
    this.appending = append.catch(() => {});
    append.then(() => {
      this.send(["in", this.key, String(this.len)]);
      if (this.gone || this.len - this.pos <= STDIN_WINDOW) cb();
      else this.waiting = () => cb();
    }, cb);
  }

  private async append(chunks: Buffer[]): Promise<void> {
    const fd = await this.file();
    let total = 0;
    for (const c of chunks) total += c.length;
    // One writev; what a short write left goes out piece by piece.
    let done = await new Promise<number>((resolve, reject) =>
      writev(fd, chunks, this.len, (err, n) => (err ? reject(err) : resolve(n))),
    );
    for (let skip = 0, i = 0; done < total && i < chunks.length; i++) {
      const c = chunks[i] as Buffer;
      const from = Math.max(0, done - skip);
      skip += c.length;
      for (let at = from; at < c.length; ) {
        const n = await new Promise<number>((resolve, reject) =>
          write(fd, c, at, c.length - at, this.len + done, (err, w) =>
            err ? reject(err) : resolve(w),
          ),
        );
        at += n;
        done += n;
      }
    }
    this.len += total;
  }

  override _final(cb: (err?: Error | null) => void): void {
    try {
      this.onEof();
      this.send(["eof", this.key, String(this.len)]);
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.release();
    const fd = this.fd;
    this.fd = undefined;
    if (!fd) {
      cb(err);
      return;
    }
    // Closed only after the write in progress: its syscalls must not meet a closed (or reused) fd.
    this.appending.then(() =>
      fd.then(
        (n) => close(n, () => cb(err)),
        () => cb(err),
      ),
    );
  }
}
