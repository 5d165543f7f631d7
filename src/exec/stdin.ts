import type { Writable } from "node:stream";
import { FailedPreconditionError, OutOfRangeError } from "../errors.ts";

/**
 * The stdin byte stream of one exec, addressed by offset.
 *
 * Contract (SPEC, TaskExecStdinWrite):
 * - `write(offset, data, eof)` drops the bytes before `written` (a retried
 *   write never writes twice) and writes only the new suffix; an offset past
 *   `written` throws OutOfRange; writes are applied in call order.
 * - `eof` closes stdin after the data. A second EOF is fine, and so is an
 *   EOF-only write with an old offset. New data after EOF: FailedPrecondition.
 * - After the process exited, data is dropped and the call succeeds.
 * - The returned promise settles once the data was handed to the pipe.
 */
export class StdinStream {
  private written = 0;
  private eofSent = false;
  private exited = false;
  private queue: Promise<void> = Promise.resolve();
  /** When the last write call came (ms since the epoch; any call, also an empty one). */
  lastWriteAt = Date.now();

  constructor(private readonly pipe: Writable) {}

  /** Bytes accepted so far (the next expected offset). */
  get offset(): number {
    return this.written;
  }

  /** Called when the process exits: later writes are dropped, pending ones released. */
  markExited(): void {
    this.exited = true;
    if (!this.pipe.destroyed) this.pipe.destroy();
  }

  write(offset: number, data: Uint8Array, eof: boolean): Promise<void> {
    this.lastWriteAt = Date.now();
    const run = this.queue.then(() => this.apply(offset, data, eof));
    this.queue = run.catch(() => {});
    return run;
  }

  private async apply(offset: number, data: Uint8Array, eof: boolean): Promise<void> {
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
    if (this.exited) {
      this.written += suffix.length;
      this.eofSent ||= eof;
      return;
    }
    if (suffix.length > 0) {
      this.written += suffix.length;
      await new Promise<void>((resolve) => {
        // The callback also runs (with EPIPE) when the process has gone: the
        // data is dropped then, which is not the client's fault.
        this.pipe.write(suffix, () => resolve());
      });
    }
    if (eof && !this.eofSent) {
      this.eofSent = true;
      this.pipe.end();
    }
  }
}
