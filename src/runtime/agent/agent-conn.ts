import { closeSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { InvalidArgumentError, UnavailableError } from "../../errors.ts";
import { socketPath } from "./exec-dir-files.ts";

/**
 * One event line of the agent about exec KEY (native/task-agent.c, "Events"):
 * `kind` is its first word, `args` the words after KEY (for `error`, the
 * whole rest of the line as one word).
 */
export interface AgentEvent {
  kind: string;
  key: string;
  args: string[];
}

/** One `state` line of a `list` answer. */
export interface AgentExecState {
  key: string;
  pid: number;
  running: boolean;
  /** How it ended, once reaped. */
  exit: { code: number; signal?: never } | { signal: number; code?: never } | undefined;
  outLen: number;
  outEnded: boolean;
  errLen: number;
  errEnded: boolean;
  inPos: number;
  inEnded: boolean;
  /** KEY.in is a ring (flag `i`; an older agent has no such field: false). */
  inRing: boolean;
}

/** The socket file the agent binds in its exec directory. */
export const AGENT_SOCKET = "agent.sock";
/** The agent's largest request (MAX_FRAME). */
export const MAX_AGENT_FRAME = 4 << 20;
/**
 * The longest event line taken from an agent, newline excluded: the agent
 * formats each into 512 bytes (native/task-agent.c `put`; the longest, a
 * `state` line, is under 300). An agent a task took over may send anything:
 * past this without a newline the connection is dropped, as when the agent
 * dies.
 */
export const MAX_AGENT_LINE = 4096;

/** The connection to the agent ended (it died, or sent what no agent sends). */
export function connectionClosed(): UnavailableError {
  return new UnavailableError("the task agent's connection closed");
}

/**
 * One request: a 4-byte little-endian length, then NUL-terminated fields.
 * @throws InvalidArgumentError for a field holding a NUL byte (it would split the field)
 */
export function agentFrame(fields: readonly string[]): Buffer {
  // A backstop: requests are checked where they come in, but a NUL must never reach the agent.
  if (fields.some((f) => f.includes("\0"))) {
    throw new InvalidArgumentError("a NUL byte in a field of a request to the task agent");
  }
  const parts: Buffer[] = [Buffer.alloc(4)];
  let len = 0;
  for (const f of fields) {
    const b = Buffer.from(`${f}\0`);
    parts.push(b);
    len += b.length;
  }
  (parts[0] as Buffer).writeUInt32LE(len);
  return Buffer.concat(parts, len + 4);
}

/**
 * The router's connection to one task agent: requests out, event lines in.
 *
 * Contract:
 * - `send` queues a request (in order); an oversized one throws RangeError.
 * - Events about an exec go to the handler registered for its KEY (others
 *   are dropped: an exec the router no longer holds).
 * - `list` and `ping` resolve with the answer; they reject when the
 *   connection closes first. While one is pending the socket keeps the
 *   event loop alive; otherwise it does not.
 * - `closed` resolves once, when the connection ends for any reason; a line
 *   longer than MAX_AGENT_LINE ends it.
 */
export class AgentConn {
  private buf = "";
  private readonly handlers = new Map<string, (e: AgentEvent) => void>();
  private listing: { states: AgentExecState[]; resolve: (s: AgentExecState[]) => void }[] = [];
  private pings = new Map<string, () => void>();
  private pingSeq = 0;
  private failers = new Set<(err: Error) => void>();
  private ended = false;
  private waits = 0;
  private busy = false;
  readonly closed: Promise<void>;

  private constructor(private readonly sock: Socket) {
    sock.setEncoding("latin1");
    sock.unref();
    sock.on("data", (s: string) => this.onData(s));
    sock.on("error", () => {});
    this.closed = new Promise((resolve) => {
      sock.once("close", () => {
        this.ended = true;
        const err = connectionClosed();
        for (const f of this.failers) f(err);
        this.failers.clear();
        resolve();
      });
    });
  }

  /**
   * Connects to the agent whose exec directory is `dir` (rejects when none
   * listens). Through an O_PATH descriptor of agent.sock checked to be a
   * socket (`/proc/self/fd/N`, also short enough for any `dir`): never
   * through a symlink a task planted (to another task's agent).
   */
  static connect(dir: string): Promise<AgentConn> {
    let fd: number;
    try {
      fd = socketPath(join(dir, AGENT_SOCKET));
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<AgentConn>((resolve, reject) => {
      const sock = connect(`/proc/self/fd/${fd}`);
      sock.once("connect", () => resolve(new AgentConn(sock)));
      sock.once("error", reject);
    }).finally(() => closeSync(fd));
  }

  get isClosed(): boolean {
    return this.ended;
  }

  send(fields: readonly string[]): void {
    const frame = agentFrame(fields);
    if (frame.length - 4 > MAX_AGENT_FRAME) {
      throw new RangeError(`request of ${frame.length} bytes exceeds the agent's 4 MiB`);
    }
    if (!this.ended) this.sock.write(frame);
  }

  on(key: string, handler: (e: AgentEvent) => void): void {
    this.handlers.set(key, handler);
  }

  off(key: string): void {
    this.handlers.delete(key);
  }

  /** Every exec the agent keeps. */
  list(): Promise<AgentExecState[]> {
    return this.pending((resolve) => {
      this.listing.push({ states: [], resolve });
      this.send(["list"]);
    });
  }

  /** Resolves after every event the agent sent before this request's answer. */
  ping(): Promise<void> {
    return this.pending((resolve) => {
      const n = String(++this.pingSeq);
      this.pings.set(n, () => resolve());
      this.send(["ping", n]);
    });
  }

  /** Keeps the event loop alive for this connection while `busy` (execs whose end is awaited). */
  keepAlive(busy: boolean): void {
    this.busy = busy;
    this.updateRef();
  }

  private updateRef(): void {
    if (this.waits > 0 || this.busy) this.sock.ref();
    else this.sock.unref();
  }

  /**
   * Calls `fail` with connectionClosed() when the connection ends (at once
   * if it has), unless the returned function was called first; that one
   * forgets `fail`, so nothing it holds stays for the connection's life.
   */
  onClose(fail: (err: Error) => void): () => void {
    if (this.ended) {
      fail(connectionClosed());
      return () => {};
    }
    this.failers.add(fail);
    return () => this.failers.delete(fail);
  }

  /** Runs `start`, keeping the loop alive until it resolves or the connection closes. */
  private pending<T>(start: (resolve: (v: T) => void) => void): Promise<T> {
    if (this.ended) return Promise.reject(connectionClosed());
    return new Promise<T>((resolve, reject) => {
      this.waits++;
      this.updateRef();
      const off = this.onClose(reject);
      start((v) => {
        off();
        this.waits--;
        this.updateRef();
        resolve(v);
      });
    });
  }

  /** Closes the connection: `isClosed` at once, the failers and `closed` once the socket is. */
  close(): void {
    this.ended = true;
    this.sock.destroy();
  }

  private onData(s: string): void {
    if (this.ended) return;
    this.buf += s;
    let nl = this.buf.indexOf("\n");
    while (nl >= 0) {
      if (nl > MAX_AGENT_LINE) {
        this.overlong();
        return;
      }
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      this.onLine(line);
      nl = this.buf.indexOf("\n");
    }
    if (this.buf.length > MAX_AGENT_LINE) this.overlong();
  }

  /** A line no agent sends: the connection is dropped (its owner handles it as the agent's loss). */
  private overlong(): void {
    this.buf = "";
    this.sock.destroy();
  }

  private onLine(line: string): void {
    const words = line.split(" ");
    const kind = words[0] ?? "";
    if (kind === "state") {
      const w = words.slice(1);
      const n = (i: number) => Number(w[i]);
      // RUN: `run`, or `code:N` / `signal:N` once reaped.
      const [how, v] = (w[2] ?? "run").split(":");
      const exit =
        how === "code" ? { code: Number(v) } : how === "signal" ? { signal: Number(v) } : undefined;
      this.listing[0]?.states.push({
        key: w[0] ?? "",
        pid: n(1),
        running: how === "run",
        exit,
        outLen: n(3),
        outEnded: w[4] === "1",
        errLen: n(5),
        errEnded: w[6] === "1",
        inPos: n(7),
        inEnded: w[8] === "1",
        inRing: w[9] === "1",
      });
      return;
    }
    if (kind === "listed") {
      const l = this.listing.shift();
      l?.resolve(l.states);
      return;
    }
    if (kind === "pong") {
      const n = words[1] ?? "";
      const p = this.pings.get(n);
      this.pings.delete(n);
      p?.();
      return;
    }
    const key = words[1] ?? "";
    const args = kind === "error" ? [words.slice(2).join(" ")] : words.slice(2);
    this.handlers.get(key)?.({ kind, key, args });
  }
}
