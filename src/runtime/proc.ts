import type { Readable, Writable } from "node:stream";

// The processes a runtime starts (Runtime.spawn, Runtime.adopt): what is asked, what comes back.

/** How a process ended: exactly one of `code` (normal exit) or `signal` (number). */
export type ExitStatus = { code: number; signal?: never } | { signal: number; code?: never };

/** What to run. `argv[0]` is looked up in the PATH of `env`. */
export interface SpawnSpec {
  argv: string[];
  /** The complete environment of the process (nothing is inherited from the router). */
  env: Record<string, string>;
  /** Working directory: a path inside the task. */
  cwd: string;
  /** stdout: a pipe the router reads, or discarded. */
  stdout: "pipe" | "ignore";
  /** stderr: a pipe, discarded, or written into the stdout pipe in write order. */
  stderr: "pipe" | "ignore" | "stdout";
  /**
   * Run on a new pseudo-terminal of this size instead of pipes: all terminal
   * output comes on `Proc.stdout`, `Proc.stderr` is null, `Proc.stdin` writes
   * to the terminal, and `Proc.resize` changes its size.
   */
  pty?: { rows: number; cols: number };
  /**
   * Wall-clock time (ms since the epoch) at which the process group is to be
   * SIGKILLed (an exec's timeout). Runtimes that can do it inside the task
   * (no round trip, so no later than this) do; the caller kills it anyway.
   */
  deadline?: number;
  /** Grant debugging powers (ptrace) to this process only (`runtime_debug`). */
  runtimeDebug?: boolean;
  /**
   * Runtimes whose processes outlive the router (`Runtime.adopt`) keep
   * `record` (the caller's description of the exec, opaque to the runtime)
   * with the process and hand it back on adoption. Absent: not kept.
   */
  persist?: { record: string };
  /**
   * Limits of runtimes that write output into files themselves
   * (`Proc.output`): bytes kept over both streams (past it the process is
   * no longer read, so it blocks), and the grace after the leader's exit
   * for descendants holding an output pipe (see ExecOptions).
   */
  outputCap?: number;
  drainGraceMs?: number;
  /**
   * Retention instead of a cap (a task's entrypoint, which must never block
   * on its output): each stream keeps at least its newest `retain` bytes and
   * older ones may be freed; `outputCap` is then ignored. Runtimes that write
   * output into files (`Proc.output`) provide `OutputFile.keptFrom`; for
   * pipes the caller bounds what it keeps.
   */
  retain?: number;
}

/**
 * An output stream that a runtime writes into a file of its own (a task
 * agent's log), never through the router's memory. Bytes [0, length) of
 * `path` are final; the file never shrinks while the process is held.
 */
export interface OutputFile {
  readonly path: string;
  readonly length: number;
  /** No byte will follow `length`. */
  readonly ended: boolean;
  /** Resolves at the next change of `length` or `ended`, or when `signal` aborts. */
  changed(signal?: AbortSignal): Promise<void>;
  /**
   * With SpawnSpec.retain: the offset of the oldest byte still kept (the
   * bytes of `path` below it may read as zeros). Ask again AFTER reading
   * bytes: those below the answer may have been freed while they were read.
   */
  keptFrom(): Promise<number>;
  /**
   * Registers a reader that starts at `offset`; it reports each offset it
   * delivered up to with `at` and ends with `done` (also when it fails).
   * Once every live reader delivered a byte, the runtime may drop it from
   * memory (the page cache): it stays in `path`, read from disk by a later
   * reader. A hint: it never changes what a read returns.
   */
  reader(offset: number): OutputReader;
}

/** A reader's progress through an OutputFile (OutputFile.reader). */
export interface OutputReader {
  /** Every byte below `offset` was delivered. */
  at(offset: number): void;
  /** The reader ended: its position no longer holds bytes in memory. */
  done(): void;
}

/** Both output streams of a process that writes them to files (Proc.output). */
export interface ProcOutput {
  readonly stdout: OutputFile;
  readonly stderr: OutputFile;
}

/** Where a process's stdin stood when it was adopted (see Runtime.adopt). */
export interface StdinState {
  /** Bytes taken so far: the next offset. */
  written: number;
  /** EOF was sent. */
  closed: boolean;
}

/** A process an earlier router started that this one adopted (Runtime.adopt). */
export interface AdoptedProc {
  /** SpawnSpec.persist.record, as the earlier router gave it. */
  readonly record: string;
  readonly proc: Proc;
  readonly stdin: StdinState;
  /** When it ended (ms since the epoch), when it had ended before the adoption. */
  readonly endedAt?: number;
}

/**
 * A process started by a runtime, leader of its own process group.
 *
 * Contract:
 * - `stdin` is always a pipe; `stdout`/`stderr` are pipes when the spec asked
 *   for them, otherwise null.
 * - `exited` resolves exactly once with the leader's exit status; it never
 *   rejects. A program that cannot be started resolves with code 127 (not
 *   found) or 126 (not executable) after `startError` was set to a one-line
 *   reason, the way a shell reports it.
 * - `signalGroup` sends a signal to the whole process group (the leader and
 *   every descendant that stayed in the group); it never throws, also after
 *   the group is gone.
 */
export interface Proc {
  readonly pid: number | undefined;
  readonly stdin: Writable;
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
  readonly exited: Promise<ExitStatus>;
  readonly startError: string | undefined;
  signalGroup(signal: NodeJS.Signals | number): void;
  /** Resizes the terminal of a PTY process (absent for pipe processes). */
  resize?(rows: number, cols: number): void;
  /**
   * True when the kernel's OOM killer ended the process (set before `exited`
   * resolves; absent or false otherwise, also for runtimes that cannot tell).
   */
  readonly oomKilled?: boolean;
  /**
   * Present when the runtime writes the output into files itself: then
   * `stdout` and `stderr` are null and the bytes are read from here (the
   * runtime enforces SpawnSpec.outputCap and drainGraceMs).
   */
  readonly output?: ProcOutput;
  /**
   * Frees what the runtime keeps of an ended process (its output files and
   * record); called once the caller no longer reads it. Absent: nothing kept.
   */
  release?(): Promise<void>;
}
