import { closeSync, constants as fsc, readSync } from "node:fs";
import { FailedPreconditionError, UnavailableError } from "../../errors.ts";
import { Waiters } from "../../util/waiters.ts";
import type { OutputFile, OutputReader } from "../runtime.ts";
import { openRegularSync } from "./exec-dir-files.ts";

/** The agent hears of readers' progress once per this many bytes (native/task-agent.c, "Memory"). */
const SEEN_STEP = 16 * 1024 * 1024;

/**
 * One output stream of an agent's exec (KEY.out or KEY.err): its length and
 * end as the agent reported them (`out`/`outend` events), the file the
 * agent writes. Readers wait in `changed()`.
 */
export class FileOutput implements OutputFile {
  private _length = 0;
  private _ended = false;
  private readonly waiters = new Waiters();
  /** The step of the last `seen` sent. */
  private seenStep = 0;
  /** Positions of the live readers (OutputFile.reader). */
  private readonly readers = new Set<{ pos: number }>();

  /**
   * @param keptPath the agent's KEY.kept (written only for execs started with
   *   a retention, flag `r`), and `index` this stream's field in it (0, 1)
   * @param seen sends the agent's `seen KEY STREAM OFFSET` request
   */
  constructor(
    readonly path: string,
    private readonly keptPath: string,
    private readonly index: 0 | 1,
    private readonly seen: (offset: number) => void,
  ) {}

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

  /**
   * The oldest byte kept (KEY.kept; 0 while absent). The agent replaces the
   * file whole (rename), so one read of an open KEY.kept is one whole line;
   * `keptField` still reads twice, for an agent of an older build that
   * rewrote it in place.
   */
  async keptFrom(): Promise<number> {
    return keptField(this.keptPath, this.index);
  }

  reader(offset: number): OutputReader {
    const r = { pos: offset };
    this.readers.add(r);
    return {
      at: (pos) => {
        r.pos = pos;
        this.shed();
      },
      done: () => {
        this.readers.delete(r);
        this.shed();
      },
    };
  }

  /**
   * Tells the agent (`seen`) where the slowest live reader is, once that
   * crossed a step since the last time: no live reader needs what is
   * below it. Nothing while no reader is live.
   */
  private shed(): void {
    let min = Number.POSITIVE_INFINITY;
    for (const r of this.readers) min = Math.min(min, r.pos);
    const step = Math.floor(min / SEEN_STEP);
    if (!Number.isFinite(min) || step <= this.seenStep) return;
    this.seenStep = step;
    this.seen(min);
  }

  changed(signal?: AbortSignal): Promise<void> {
    if (this._ended) return Promise.resolve();
    return this.waiters.wait(signal);
  }

  private wake(): void {
    this.waiters.wake();
  }
}

/**
 * Field `index` of a KEY.kept line (0 when the file is absent or not a file):
 * read until two back-to-back reads of one descriptor agree. The agent
 * replaces the file whole, so they agree at once; only a writer that
 * rewrites it in place (an agent of an older build, or a runtime_debug exec
 * changing its own task's exec files) can tear a read. Opened as a regular
 * file only (exec-dir-files.ts): never through a symlink, never a FIFO or a
 * device node.
 * @throws UnavailableError when no two reads agreed (a rewrite in place that
 *   never paused): the caller may ask again; FailedPreconditionError when
 *   they agree on something that is not a KEY.kept line (asking again would
 *   not help).
 */
export function keptField(path: string, index: 0 | 1): number {
  let fd: number;
  try {
    fd = openRegularSync(path, fsc.O_RDONLY);
  } catch {
    return 0; // absent, or not a regular file
  }
  try {
    const buf = Buffer.alloc(64);
    const read = () => buf.toString("latin1", 0, readSync(fd, buf, 0, 64, 0));
    let prev = read();
    for (let i = 0; i < 1000; i++) {
      if (prev === "") return 0; // none yet: nothing was freed
      const text = read();
      if (text === prev) {
        const m = /^(\d{20}) (\d{20})\n$/.exec(text);
        if (m) return Number(m[index + 1]);
        // Not the agent's line, and not changing: a task's process wrote it (runtime_debug).
        throw new FailedPreconditionError("this output's retention state is not readable");
      }
      prev = text;
    }
  } finally {
    closeSync(fd);
  }
  throw new UnavailableError("this output's retention state is being rewritten; try again");
}
