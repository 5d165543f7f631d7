import { Waiters } from "../../util/waiters.ts";
import type { OutputFile } from "../runtime.ts";

/**
 * One output stream of an agent's exec (KEY.out or KEY.err): its length and
 * end as the agent reported them (`out`/`outend` events), the file the
 * agent writes. Readers wait in `changed()`.
 */
export class FileOutput implements OutputFile {
  private _length = 0;
  private _ended = false;
  private readonly waiters = new Waiters();

  constructor(readonly path: string) {}

  get length(): number {
    return this._length;
  }

  get ended(): boolean {
    return this._ended;
  }

  /** The agent reported `len` bytes (never less than before). */
  grow(len: number): void {
    if (this._ended || !(len > this._length)) return;
    this._length = len;
    this.wake();
  }

  /** The stream ended at `len` (or where it stands when `len` is absent or smaller). */
  end(len?: number): void {
    if (this._ended) return;
    if (len !== undefined && len > this._length) this._length = len;
    this._ended = true;
    this.wake();
  }

  changed(signal?: AbortSignal): Promise<void> {
    if (this._ended) return Promise.resolve();
    return this.waiters.wait(signal);
  }

  private wake(): void {
    this.waiters.wake();
  }
}
