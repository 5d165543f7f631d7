import type { Readable } from "node:stream";
import { FailedPreconditionError, InvalidArgumentError, throwIfAborted } from "../errors.ts";
import type { ExitStatus, Proc, StdinState } from "../runtime/runtime.ts";
import { type LongTimer, setLongTimeout } from "../util/long-timer.ts";
import { Waiters } from "../util/waiters.ts";
import type { ExecRequest } from "./exec-request.ts";
import { FileLog } from "./file-log.ts";
import { ByteBudget, OutputLog } from "./output-log.ts";
import { PTY_IDLE_KILL_GRACE_MS, watchIdle } from "./pty.ts";
import { StdinStream } from "./stdin.ts";

/** Why an exec ended ("oom": the kernel's OOM killer ended it, see Proc.oomKilled). */
export type TerminationCause =
  | "exited"
  | "signaled"
  | "timeout"
  | "killed"
  | "task_terminated"
  | "oom";

export interface ExecOptions {
  /** In-memory bytes per stream before spilling to disk. */
  memoryLimit: number;
  /** Cap on the bytes kept for one exec (both streams); past it the command is paused. */
  outputCap: number;
  /** Grace after exit for descendants that hold an output pipe open, in ms. */
  drainGraceMs: number;
  /** Prefix of the spill files (`<prefix>.stdout`, `<prefix>.stderr`). */
  spillPrefix: string;
  onError: (err: unknown) => void;
  /**
   * When a `timeout_secs` exec is killed (ms since the epoch; the same time
   * the runtime was given as SpawnSpec.deadline). Default: the start plus
   * timeoutKillDelayMs.
   */
  deadline?: number;
  /** A PTY exec whose stdin had no write this long is ended (unless its request opts out); 0: never. */
  ptyIdleTimeoutMs?: number;
  /** An exec an earlier router started (Runtime.adopt): when it started, where its stdin stands. */
  adopted?: { startedAt: number; stdin: StdinState; endedAt?: number };
}

/** What an exec reads a stream from: OutputLog (bytes the router pumped) or FileLog (Proc.output). */
interface StreamLog {
  readonly length: number;
  read(offset: number, signal?: AbortSignal): AsyncGenerator<Buffer, void, undefined>;
  dispose(): Promise<void>;
}

export type StreamName = "stdout" | "stderr";

/**
 * A `timeout_secs` kill comes this much before the timeout, so that every
 * stream of the exec has ended (output, then OK) by the time a client that
 * started its clock when TaskExecStart returned reaches the timeout: the
 * SDKs give the stream exactly that deadline (see docs/DECISIONS.md).
 */
export const TIMEOUT_STREAM_MARGIN_MS = 250;

/** When (ms after the start) an exec with `timeout_secs` is killed. */
export function timeoutKillDelayMs(timeoutSecs: number): number {
  return Math.max(0, timeoutSecs * 1000 - TIMEOUT_STREAM_MARGIN_MS);
}

/**
 * One command started in a task: its process, output logs, stdin and exit
 * state. The exec outlives its process; it is dropped by `dispose()`.
 */
export class Exec {
  readonly startedAt: number;
  endedAt: number | undefined;
  status: ExitStatus | undefined;
  cause: TerminationCause | undefined;
  readonly stdin: StdinStream;
  readonly exited: Promise<ExitStatus>;
  private readonly logs: Record<StreamName, StreamLog>;
  private timeout: LongTimer | undefined;
  private requestedCause: TerminationCause | undefined;
  /** The terminal's size for a PTY exec, undefined otherwise. */
  ptySize: { rows: number; cols: number } | undefined;
  private stopIdleWatch: (() => void) | undefined;
  /** Calls of `wait` with a signal: woken once at the exit (an aborted one leaves nothing here). */
  private readonly exitWaiters = new Waiters();

  constructor(
    readonly id: string,
    readonly request: ExecRequest,
    readonly fingerprint: string,
    private readonly proc: Proc,
    opts: ExecOptions,
  ) {
    this.startedAt = opts.adopted?.startedAt ?? Date.now();
    const failedToStart = proc.pid === undefined && !opts.adopted;
    // Output the runtime writes to files (a task agent's) is read from there; pipes are pumped.
    let mem: Record<StreamName, OutputLog> | undefined;
    if (proc.output) {
      this.logs = {
        stdout: new FileLog(proc.output.stdout),
        stderr: new FileLog(proc.output.stderr),
      };
    } else {
      const budget = new ByteBudget(opts.outputCap);
      const mk = (name: StreamName) =>
        new OutputLog({
          memoryLimit: opts.memoryLimit,
          spillPath: `${opts.spillPrefix}.${name}`,
          budget,
          onError: opts.onError,
        });
      mem = { stdout: mk("stdout"), stderr: mk("stderr") };
      this.logs = mem;
      if (!failedToStart) {
        pump(proc.stdout, mem.stdout, proc.exited, opts.drainGraceMs);
        pump(proc.stderr, mem.stderr, proc.exited, opts.drainGraceMs);
      }
    }
    this.stdin = new StdinStream(proc.stdin, opts.adopted?.stdin);
    const deadline = request.timeoutSecs
      ? (opts.deadline ?? this.startedAt + timeoutKillDelayMs(request.timeoutSecs))
      : undefined;
    if (deadline !== undefined) {
      // Days ahead (timeout_secs up to ~136 years): a plain setTimeout would fire at once.
      this.timeout = setLongTimeout(() => this.kill("SIGKILL", "timeout"), deadline - Date.now());
    }
    if (request.pty) {
      this.ptySize = { rows: request.pty.rows, cols: request.pty.cols };
      const idleMs = opts.ptyIdleTimeoutMs ?? 0;
      if (!failedToStart && idleMs > 0 && !request.pty.noTerminateOnIdleStdin) {
        this.stopIdleWatch = watchIdle(
          () => this.stdin.lastWriteAt,
          idleMs,
          () => {
            this.kill("SIGHUP", "timeout");
            setTimeout(
              () => this.running && this.kill("SIGKILL", "timeout"),
              PTY_IDLE_KILL_GRACE_MS,
            );
          },
        );
      }
    }
    this.exited = proc.exited.then((status) => {
      this.timeout?.clear();
      this.stopIdleWatch?.();
      if (failedToStart && mem) {
        // A shell's one-line reason, on stderr (or stdout when merged or on a terminal).
        const target = request.stderr === "pipe" && !request.pty ? mem.stderr : mem.stdout;
        const wanted = request.pty
          ? request.stdout === "pipe"
          : request.stderr !== "devnull" &&
            !(request.stderr === "stdout" && request.stdout === "devnull");
        if (wanted)
          target.append(Buffer.from(`taskrouter: ${proc.startError ?? "cannot start"}\n`));
        mem.stdout.end();
        mem.stderr.end();
      }
      this.status = status;
      this.endedAt = opts.adopted?.endedAt ?? Date.now();
      // A SIGKILL at the deadline came from the runtime's own timer (SpawnSpec.deadline).
      if (deadline !== undefined && status.signal === 9 && Date.now() >= deadline) {
        this.requestedCause ??= "timeout";
      }
      this.cause =
        this.requestedCause ??
        (proc.oomKilled ? "oom" : status.signal !== undefined ? "signaled" : "exited");
      this.stdin.markExited();
      this.exitWaiters.wake();
      return status;
    });
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  get running(): boolean {
    return this.status === undefined;
  }

  /** Bytes written so far to a stream. */
  bytes(stream: StreamName): number {
    return this.logs[stream].length;
  }

  /** Yields the stream's bytes from `offset` on (see OutputLog.read). */
  read(stream: StreamName, offset: number, signal?: AbortSignal): AsyncGenerator<Buffer> {
    return this.logs[stream].read(offset, signal);
  }

  /**
   * Sends a signal to the exec's whole process group, recording why (the
   * first recorded cause wins; null records none, for signals that do not
   * end a process).
   */
  kill(signal: NodeJS.Signals | number, cause: TerminationCause | null = "killed"): void {
    if (this.status === undefined && cause !== null) this.requestedCause ??= cause;
    this.proc.signalGroup(signal);
  }

  /**
   * Sets the terminal size of a PTY exec (1..65535 each). FailedPrecondition
   * for an exec without a terminal; nothing happens once it exited.
   */
  resize(rows: number, cols: number): void {
    const ok = (n: number) => Number.isInteger(n) && n >= 1 && n <= 65535;
    if (!ok(rows) || !ok(cols)) {
      throw new InvalidArgumentError(
        `terminal size ${rows}x${cols}: rows and cols must be 1-65535`,
      );
    }
    if (!this.ptySize || !this.proc.resize) {
      throw new FailedPreconditionError(`exec ${this.id} has no terminal (started without pty)`);
    }
    if (!this.running) return;
    this.ptySize = { rows, cols };
    this.proc.resize(rows, cols);
  }

  /**
   * Resolves with the exit status, or rejects when `signal` aborts first
   * (CancelledError, or the signal's reason when that is a TaskRouterError).
   * An aborted call leaves nothing behind: no reaction on `exited` per call
   * (clients cancel and repeat Wait for as long as an exec runs).
   */
  async wait(signal?: AbortSignal): Promise<ExitStatus> {
    if (!signal) return this.exited;
    for (;;) {
      throwIfAborted(signal);
      // Set before exitWaiters wakes (the same reaction): a later call never waits.
      if (this.status) return this.status;
      await this.exitWaiters.wait(signal);
    }
  }

  /** Frees the logs (readers get NotFound) and what the runtime keeps of the process, and stops the timeout. */
  async dispose(): Promise<void> {
    this.timeout?.clear();
    this.stopIdleWatch?.();
    await Promise.all([this.logs.stdout.dispose(), this.logs.stderr.dispose()]);
    await this.proc.release?.();
  }
}

/**
 * Moves bytes from a pipe into a log with backpressure. The log ends once the
 * process has exited and the pipe reached EOF, or `graceMs` after the exit
 * when descendants still hold the pipe (then the pipe is cut off). A missing
 * pipe ends at exit.
 */
/** A descendant still writing after exit is cut off after at most this many graces. */
const MAX_GRACE_REARMS = 10;

function pump(
  pipe: Readable | null,
  log: OutputLog,
  exited: Promise<ExitStatus>,
  graceMs: number,
): void {
  if (!pipe) {
    void exited.then(() => log.end());
    return;
  }
  let paused = false;
  let lastData = 0;
  pipe.on("data", (chunk: Buffer) => {
    lastData = Date.now();
    if (!log.append(chunk)) {
      paused = true;
      pipe.pause();
    }
  });
  log.onResume(() => {
    paused = false;
    pipe.resume();
  });
  // The stream ends once the process has exited AND the pipe is drained (EOF).
  let drained = false;
  let gone = false;
  const finish = () => {
    drained = true;
    if (gone) log.end();
  };
  pipe.once("end", finish);
  pipe.once("close", finish);
  pipe.on("error", finish);
  void exited.then(() => {
    gone = true;
    if (drained) return log.end();
    let rearms = 0;
    const cut = () => {
      if (log.ended) return;
      // Paused by our own backpressure, or bytes still flowing (a busy router
      // may read late): keep waiting, for a bounded number of graces.
      const flowing = Date.now() - lastData < graceMs && rearms++ < MAX_GRACE_REARMS;
      if (paused || flowing) return void setTimeout(cut, graceMs).unref();
      pipe.destroy();
      log.end();
    };
    setTimeout(cut, graceMs).unref();
  });
}
