import type { Writable } from "node:stream";
import {
  AbortedError,
  FailedPreconditionError,
  OutOfRangeError,
  TaskRouterError,
  throwIfAborted,
} from "../errors.ts";
import { recycle } from "../util/chunk-pool.ts";
import { Waiters } from "../util/waiters.ts";

/** Where an exec's stdin stands (TaskExecStdinStatus). */
export interface StdinProgress {
  /** Bytes accepted so far by every write path: the next expected offset. */
  written: number;
  /** EOF was received (stdin is closed). */
  closed: boolean;
}

/**
 * One streaming writer of an exec's stdin (TaskExecStdinWriteStream): it
 * writes at its own running offset, starting where the stream's start
 * message said. It is evicted by `StdinStream.progress()` (a status call)
 * or by a newer stream: from then on every call throws Aborted and applies
 * nothing. Likewise after any failure: later calls throw the first one.
 */
export interface StdinSession {
  /**
   * Writes `data` at the session's offset (a replayed prefix is skipped) and
   * advances it. Resolves once its bytes were accepted (counted in
   * `written`, so a status call sees them) and the session can take more:
   * up to SESSION_WINDOW bytes of the stream (any writer's) may still be on
   * their way to the pipe (in order). When `signal` aborts first it throws
   * (the session is failed then); bytes it accepted stay accepted.
   */
  write(data: Uint8Array, signal?: AbortSignal): Promise<void>;
  /** Closes stdin once every byte written so far was taken (`signal`: as for `write`). */
  end(signal?: AbortSignal): Promise<void>;
}

/**
 * The stdin byte stream of one exec, addressed by offset.
 *
 * Contract (SPEC, TaskExecStdinWrite; PROTOCOL-LATER §5.4):
 * - `write(offset, data, eof)` drops the bytes before `written` (a retried
 *   write never writes twice) and writes only the new suffix; an offset past
 *   `written` throws OutOfRange; writes are applied in call order.
 * - `eof` closes stdin after the data. A second EOF is fine, and so is an
 *   EOF-only write with an old offset. New data after EOF: FailedPrecondition.
 * - A pipe write failing with a typed error (TaskRouterError) fails the
 *   call that wrote it and every later one; other failures (EPIPE) drop the bytes.
 * - After the process exited, unary data is dropped and the call succeeds;
 *   a streaming session instead throws FailedPrecondition, and only once the
 *   exit status is known (so a client that polls sees the exit).
 * - The returned promise settles once the data, and all data written
 *   before it, was handed to the pipe, or when the call's `signal` aborts
 *   first (CancelledError; the bytes stay accepted: a retry skips them).
 *   Writes are issued to the pipe in order without waiting for the
 *   previous one to complete. A waiting call holds nothing on the stream
 *   once its signal aborted.
 * - `data` lent by a pool (src/util/chunk-pool.ts: a pooled request) is
 *   recycled once the pipe took it, before the promise settles: the caller
 *   gives up its bytes with the call (also a StdinSession's caller).
 * - Nothing closes stdin but an EOF: a broken or evicted stream leaves it
 *   open with every byte it had applied.
 */
export class StdinStream {
  private written = 0;
  private eofSent = false;
  private exited = false;
  /** The typed error a pipe write failed with (its first byte at `from`): every later call throws it. */
  private failure: { err: TaskRouterError; from: number } | undefined;
  private pipeBroken = false;
  private queue: Promise<void> = Promise.resolve();
  /** Bytes of `written` the pipe is done with (its write callbacks run in order). */
  private taken = 0;
  /** Woken when the pipe took bytes and when the process exited. */
  private readonly changed = new Waiters();
  /** Generation of the streaming session allowed to write; bumped by status and new streams. */
  private sessionGen = 0;
  /** When the last write call came (ms since the epoch; any call, also an empty one). */
  lastWriteAt = Date.now();

  /** `start`: where stdin stood when an earlier router left the exec (absent: nothing written). */
  constructor(
    private readonly pipe: Writable,
    start?: { written: number; closed: boolean },
  ) {
    this.written = start?.written ?? 0;
    this.taken = this.written;
    this.eofSent = start?.closed ?? false;
    pipe.on("error", () => {
      this.pipeBroken = true;
    });
  }

  /** Bytes accepted so far (the next expected offset). */
  get offset(): number {
    return this.written;
  }

  /**
   * Where stdin stands. Evicts the streaming session in flight, if any
   * (PROTOCOL-LATER §5.4: a status call precedes a resume).
   */
  progress(): StdinProgress {
    this.sessionGen++;
    return { written: this.written, closed: this.eofSent };
  }

  /** Called when the process exits (its status is known): later writes are dropped, pending ones released. */
  markExited(): void {
    this.exited = true;
    if (!this.pipe.destroyed) this.pipe.destroy();
    this.changed.wake();
  }

  async write(offset: number, data: Uint8Array, eof: boolean, signal?: AbortSignal): Promise<void> {
    const issued = await this.enqueue(() => this.apply(offset, data, eof, undefined));
    await this.takenUpTo(issued.upTo, signal);
  }

  /**
   * Resolves once the pipe took the first `upTo` bytes, or the process exited
   * (bytes dropped after the exit are counted but never taken); throws when
   * `signal` aborts first.
   */
  private async takenUpTo(upTo: number, signal: AbortSignal | undefined): Promise<void> {
    while (this.taken < upTo && !this.exited) {
      throwIfAborted(signal);
      await this.changed.wait(signal);
    }
    if (this.failure && upTo > this.failure.from) throw this.failure.err;
  }

  /**
   * Opens a streaming session whose first byte goes at `offset` (evicting any
   * earlier session). An offset past `written` is OutOfRange; a lower one
   * skips the prefix that was already written.
   */
  openSession(offset: number): StdinSession {
    if (offset > this.written) {
      throw new OutOfRangeError(
        `stdin offset ${offset} is past the ${this.written} bytes written so far`,
      );
    }
    const gen = ++this.sessionGen;
    let pos = offset;
    const guard = () => {
      if (gen !== this.sessionGen) {
        throw new AbortedError(
          "this stdin stream was superseded (a status call or a newer stream)",
        );
      }
    };
    let failure: { err: unknown } | undefined;
    // The first failure ends the session: every later call throws it and issues nothing.
    const once = async (fn: () => Promise<void>) => {
      if (failure) throw failure.err;
      try {
        await fn();
      } catch (err) {
        failure ??= { err };
        throw err;
      }
    };
    return {
      write: (data, signal) =>
        once(async () => {
          const at = pos;
          pos += data.length;
          const issued = await this.enqueue(() => this.apply(at, data, false, guard, signal));
          // The window: at most SESSION_WINDOW bytes of the stream not yet taken by the pipe.
          await this.takenUpTo(issued.upTo - SESSION_WINDOW, signal);
        }),
      end: (signal) =>
        once(async () => {
          await this.takenUpTo(pos, signal);
          await this.enqueue(() => this.apply(pos, new Uint8Array(0), true, guard, signal));
        }),
    };
  }

  /**
   * Runs `op` after the ops before it. The next op starts as soon as this
   * one has issued its pipe write (the pipe keeps the order, and a writer
   * with `_writev` takes several at once). Resolves once `op` issued its
   * write (its bytes are counted in `written`); `written` of the result
   * settles when the pipe took them.
   */
  private enqueue(op: () => Promise<Issued>): Promise<Issued> {
    this.lastWriteAt = Date.now();
    const issued = this.queue.then(op);
    this.queue = issued.then(
      () => {},
      () => {},
    );
    return issued;
  }

  private async apply(
    offset: number,
    data: Uint8Array,
    eof: boolean,
    guard: (() => void) | undefined,
    signal?: AbortSignal,
  ): Promise<Issued> {
    guard?.();
    if (this.failure) throw this.failure.err;
    if (offset > this.written) {
      throw new OutOfRangeError(
        `stdin offset ${offset} is past the ${this.written} bytes written so far`,
      );
    }
    const skip = this.written - offset;
    const suffix = skip >= data.length ? data.subarray(0, 0) : data.subarray(skip);
    if (suffix.length > 0 && this.eofSent) {
      throw new FailedPreconditionError("stdin is already closed (EOF was sent)");
    }
    if (guard && (this.exited || this.pipeBroken) && (suffix.length > 0 || !this.eofSent)) {
      // The process is gone: answer only once its exit status is visible to Poll.
      while (!this.exited) {
        throwIfAborted(signal);
        await this.changed.wait(signal);
      }
      throw new FailedPreconditionError("the process has exited: its stdin is closed");
    }
    if (this.exited) {
      this.written += suffix.length;
      this.eofSent ||= eof;
      return DONE;
    }
    if (suffix.length > 0) {
      this.written += suffix.length;
      const upTo = this.written;
      const from = upTo - suffix.length;
      // The callback also runs (with EPIPE) when the process has gone: the
      // data is dropped then, which is not the client's fault. A typed error
      // (a task agent's KEY.in that is not a regular file: FailedPrecondition)
      // is the answer of the calls waiting for these bytes, and of every later call.
      this.pipe.write(suffix, (err) => {
        // The pipe is done with the bytes: a pooled request buffer can serve again.
        recycle(data);
        if (err instanceof TaskRouterError) this.failure ??= { err, from };
        this.taken = Math.max(this.taken, upTo);
        this.changed.wake();
      });
    }
    if (eof && !this.eofSent) {
      this.eofSent = true;
      this.pipe.end();
    }
    // Pipe callbacks run in write order: the last write done means all are.
    return { upTo: this.written };
  }
}

/** Bytes a streaming session may have issued to the pipe but not yet written. */
export const SESSION_WINDOW = 8 * 1024 * 1024;

/** An op of StdinStream's queue, once issued: its bytes were taken once the pipe took `upTo`. */
interface Issued {
  upTo: number;
}
const DONE: Issued = { upTo: 0 };
