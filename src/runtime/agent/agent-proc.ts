import { constants } from "node:os";
import { join } from "node:path";
import { answered } from "../../util/deadline.ts";
import type { ExitStatus, Proc, ProcOutput, StdinState } from "../runtime.ts";
import type { AgentEvent, AgentExecState } from "./agent-conn.ts";
import { AgentStdin } from "./agent-stdin.ts";
import { regularSize } from "./exec-dir-files.ts";
import { FileOutput } from "./file-output.ts";

/** What an AgentProc needs of its task's agent. */
export interface AgentProcDeps {
  /** The exec's key (its files are `<dir>/<key>.*`). */
  key: string;
  /** The agent's exec directory on this machine. */
  dir: string;
  /** Sends a request to the agent (dropped while it is unreachable). */
  send: (fields: string[]) => void;
  /** Where stdin stands (zero for a new exec). */
  stdin: StdinState;
  /** KEY.in is a ring (the exec was started with flag `i`, see AgentStdin). */
  ring: boolean;
  /** OOM kills counted in the task's cgroup so far (undefined: unknown). */
  oomKills?: (() => number | undefined) | undefined;
  /** Frees the exec's files and the agent's state of it (Proc.release). */
  release: () => Promise<void>;
  /** Called when the exec ended or one of its streams did. */
  settled: () => void;
  /** Called before EOF is sent to its stdin. */
  stdinEof: () => void;
}

/** The number of a signal name or number (SIGKILL for an unknown name). */
function signalNumber(sig: NodeJS.Signals | number): number {
  return typeof sig === "number" ? sig : (constants.signals[sig] ?? 9);
}

/**
 * A process the task's agent runs (native/task-agent.c): a Proc whose output
 * is in the agent's files (`output`), whose stdin is KEY.in (AgentStdin), and
 * whose state comes in the agent's events (`onEvent`).
 */
export class AgentProc implements Proc {
  pid: number | undefined;
  readonly stdin: AgentStdin;
  readonly stdout = null;
  readonly stderr = null;
  readonly output: ProcOutput & { stdout: FileOutput; stderr: FileOutput };
  readonly exited: Promise<ExitStatus>;
  readonly startError = undefined;
  oomKilled = false;
  private status: ExitStatus | undefined;
  private resolveExit: (s: ExitStatus) => void = () => {};
  private readonly oomBefore: number | undefined;

  constructor(private readonly deps: AgentProcDeps) {
    const file = (suffix: string) => join(deps.dir, `${deps.key}.${suffix}`);
    const seen = (stream: string) => (offset: number) =>
      deps.send(["seen", deps.key, stream, String(offset)]);
    this.output = {
      stdout: new FileOutput(file("out"), file("kept"), 0, seen("out")),
      stderr: new FileOutput(file("err"), file("kept"), 1, seen("err")),
    };
    this.stdin = new AgentStdin(
      file("in"),
      deps.send,
      deps.key,
      deps.stdin,
      deps.stdinEof,
      deps.ring,
    );
    this.stdin.on("error", () => {});
    this.oomBefore = deps.oomKills?.();
    this.exited = new Promise((resolve) => {
      this.resolveExit = resolve;
    });
  }

  get key(): string {
    return this.deps.key;
  }

  get running(): boolean {
    return this.status === undefined;
  }

  /** An event of the agent about this exec. */
  onEvent(e: AgentEvent): void {
    const n = Number(e.args[0] ?? 0);
    switch (e.kind) {
      case "out":
        this.output.stdout.grow(n);
        break;
      case "err":
        this.output.stderr.grow(n);
        break;
      case "outend":
        this.output.stdout.end(n);
        this.deps.settled();
        break;
      case "errend":
        this.output.stderr.end(n);
        this.deps.settled();
        break;
      case "inpos":
        this.stdin.progress(n);
        break;
      case "inend":
        this.stdin.progress(n);
        this.stdin.inEnded();
        break;
      case "exit": {
        const v = Number(e.args[1] ?? 0);
        this.exit(e.args[0] === "signal" ? { signal: v } : { code: v });
        break;
      }
    }
  }

  /** The exec ended with `status` (once; later calls are ignored). */
  exit(status: ExitStatus): void {
    if (this.status) return;
    this.status = status;
    if (status.signal === 9 && this.oomBefore !== undefined) {
      this.oomKilled = (this.deps.oomKills?.() ?? 0) > this.oomBefore;
    }
    this.stdin.markGone();
    this.resolveExit(status);
    this.deps.settled();
  }

  /** Its end or the end of one of its streams is still to come. */
  get busy(): boolean {
    return this.status === undefined || !this.output.stdout.ended || !this.output.stderr.ended;
  }

  /**
   * The agent is gone: the streams end where they stand (`lengths`: the
   * files' sizes) and the exec ends with `status` unless it already had.
   */
  lost(status: ExitStatus, lengths: { out: number; err: number }): void {
    this.output.stdout.grow(lengths.out);
    this.output.stderr.grow(lengths.err);
    this.output.stdout.end();
    this.output.stderr.end();
    this.exit(status);
    this.deps.settled();
  }

  /**
   * Brings the exec up to the agent's `state` of it; none: the agent lost it
   * (or is gone), so it is `lost` with `recorded` (its `exits` line) or as
   * SIGKILLed, its streams ending at its files' sizes.
   */
  sync(state: AgentExecState | undefined, recorded: ExitStatus | undefined): void {
    if (!state) {
      const file = (s: string) => join(this.deps.dir, `${this.deps.key}.${s}`);
      this.lost(recorded ?? { signal: 9 }, {
        out: regularSize(file("out")),
        err: regularSize(file("err")),
      });
      return;
    }
    if (state.pid > 0) this.pid = state.pid;
    this.output.stdout.grow(state.outLen);
    this.output.stderr.grow(state.errLen);
    if (state.outEnded) this.output.stdout.end(state.outLen);
    if (state.errEnded) this.output.stderr.end(state.errLen);
    this.stdin.progress(state.inPos);
    if (state.inEnded) this.stdin.inEnded();
    if (!state.running) this.exit(state.exit ?? recorded ?? { signal: 9 });
  }

  /** Resolves once both output streams ended, or after `ms` at the latest. */
  async streamsEnded(ms: number): Promise<void> {
    const ends = Promise.all(
      [this.output.stdout, this.output.stderr].map(async (o) => {
        while (!o.ended) await o.changed();
      }),
    );
    await answered(ends, ms);
  }

  signalGroup(sig: NodeJS.Signals | number): void {
    if (this.status === undefined)
      this.deps.send(["kill", this.deps.key, String(signalNumber(sig))]);
  }

  resize(rows: number, cols: number): void {
    if (this.status === undefined) {
      this.deps.send(["resize", this.deps.key, String(rows), String(cols)]);
    }
  }

  release(): Promise<void> {
    return this.deps.release();
  }
}
