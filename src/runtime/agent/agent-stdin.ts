import { close, constants } from "node:fs";
import { Writable } from "node:stream";
import type { StdinState } from "../runtime.ts";
import { createOrOpenFd } from "./exec-dir-files.ts";
import {
  countBytes,
  openRing,
  pwritevAll,
  RING_SIZE,
  runs,
  spareRing,
  writeRing,
} from "./stdin-ring.ts";

/**
 * How far the bytes the router has taken may run ahead of what the command
 * has read before a write is answered: the client's next write overlaps the
 * command reading this one, and a stalled command holds at most this much
 * unread (on disk, in KEY.in).
 */
export const STDIN_WINDOW = 32 * 1024 * 1024;
/** The most of a write a ring takes at once (a larger one waits for room piece by piece). */
const RING_PIECE = 16 * 1024 * 1024;

/**
 * The stdin of an agent's exec as a Writable: each write is appended to
 * KEY.in (the agent copies it from there into the command's stdin) and
 * announced with `in KEY LEN`; its callback runs once the command is at most
 * STDIN_WINDOW behind (`inpos` events), or the command is gone. `end()`
 * calls `onEof` (the EOF is journaled for a router that adopts the exec)
 * and sends `eof KEY LEN`. Bytes written after the command is gone are dropped.
 *
 * A ring KEY.in (`ring`, the exec's flag `i`; ./stdin-ring.ts) takes each
 * write in pieces of at most RING_PIECE bytes, each once the command has
 * taken enough that it overwrites nothing unread; after each piece the
 * count in KEY.inlen is updated, then the piece is announced. Once the
 * command no longer reads, the ring becomes the task's spare (after the
 * append in progress).
 */
export class AgentStdin extends Writable {
  private fd: Promise<number> | undefined;
  private len: number;
  private pos = 0;
  private waiting: (() => void) | undefined;
  /** The append in progress (settled when none is). */
  private appending: Promise<void> = Promise.resolve();
  private gone = false;
  /** A ring's descriptors (opened by its first write), and its count file's. */
  private ringFds: Promise<{ ring: number; count: number }> | undefined;
  /** Set with `ringFds` and kept after they are closed; `spared`: given to the task's next exec. */
  private ringOpened: Promise<unknown> | undefined;
  private spared = false;
  /** A ring append waiting for room (woken by `inpos` and by the command's end). */
  private roomWaiter: (() => void) | undefined;

  constructor(
    private readonly path: string,
    private readonly send: (fields: string[]) => void,
    private readonly key: string,
    start: StdinState,
    private readonly onEof: () => void,
    private ring = false,
  ) {
    super({ highWaterMark: 1 });
    this.len = start.written;
    // A ring must not be written over what the command has not taken: until the agent says
    // (`inpos`, also at adoption), nothing counts as taken.
    this.pos = ring ? 0 : start.written;
  }

  /** The agent's `inpos`: the command has read `n` bytes. */
  progress(n: number): void {
    if (n > this.pos) this.pos = n;
    if (this.waiting && this.len - this.pos <= STDIN_WINDOW) this.release();
    this.wakeRoom();
  }

  /** The command no longer reads (its stdin closed, or it was reaped). */
  markGone(): void {
    this.gone = true;
    this.release();
    this.wakeRoom();
  }

  /**
   * The agent closed the command's stdin (`inend`): it reads KEY.in no more,
   * so a ring this router opened becomes the task's spare once the append in
   * progress is done (nothing is written after `gone`).
   */
  inEnded(): void {
    this.markGone();
    const opened = this.ringOpened;
    if (this.spared || !opened) return;
    this.spared = true;
    this.appending
      .then(() => opened)
      .then(
        () => spareRing(this.path),
        () => {},
      );
  }

  /** The agent refused rings (an older agent): KEY.in is linear. Only before the first write. */
  linear(): void {
    this.ring = false;
  }

  private wakeRoom(): void {
    const w = this.roomWaiter;
    this.roomWaiter = undefined;
    w?.();
  }

  private release(): void {
    const w = this.waiting;
    this.waiting = undefined;
    w?.();
  }

  private file(): Promise<number> {
    // Created by the first write (the agent opens it at the first `in`); an existing one (an
    // adopted exec) only when it is a regular file, never through a symlink (exec-dir-files.ts).
    this.fd ??= createOrOpenFd(this.path, constants.O_RDWR);
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
      if (!this.ring) this.send(["in", this.key, String(this.len)]);
      if (this.gone || this.len - this.pos <= STDIN_WINDOW) cb();
      else this.waiting = () => cb();
    }, cb);
  }

  private async append(chunks: Buffer[]): Promise<void> {
    if (this.ring) return this.appendRing(chunks);
    const fd = await this.file();
    let total = 0;
    for (const c of chunks) total += c.length;
    await pwritevAll(fd, chunks, this.len);
    this.len += total;
  }

  private async appendRing(chunks: Buffer[]): Promise<void> {
    this.ringFds ??= openRing(this.path, this.len);
    this.ringOpened = this.ringFds;
    const { ring, count } = await this.ringFds;
    for (const run of runs(chunks, RING_PIECE)) {
      let size = 0;
      for (const b of run) size += b.length;
      // Never over bytes the command has not taken (its `inpos`).
      while (!this.gone && !this.destroyed && this.len + size - this.pos > RING_SIZE) {
        await new Promise<void>((resolve) => {
          this.roomWaiter = resolve;
        });
      }
      if (this.gone || this.destroyed) return;
      await writeRing(ring, run, this.len);
      this.len += size;
      await pwritevAll(count, [countBytes(this.len)], 0);
      this.send(["in", this.key, String(this.len)]);
    }
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
    this.wakeRoom();
    const fd = this.fd;
    const ring = this.ringFds;
    this.fd = undefined;
    this.ringFds = undefined;
    const fds = Promise.all(
      [fd?.then((n) => [n]), ring?.then((r) => [r.ring, r.count])].map((p) =>
        (p ?? Promise.resolve([])).catch(() => [] as number[]),
      ),
    );
    // Closed only after the write in progress: its syscalls must not meet a closed (or reused) fd.
    this.appending
      .then(() => fds)
      .then((all) => {
        for (const n of all.flat()) close(n, () => {});
        cb(err);
      });
  }
}
