import { mkdir } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { UnavailableError } from "../../errors.ts";
import { answered } from "../../util/deadline.ts";
import { AgentConn, type AgentExecState, connectionClosed } from "./agent-conn.ts";
import { ExecDirFileError } from "./exec-dir-files.ts";

/** Starts the agent of an exec directory and resolves once it listens (see launch.ts). */
export type AgentLauncher = (dir: string) => Promise<void>;

/** Connections `listed` tries before it holds the agent gone (each closed before answering). */
const LIST_TRIES = 3;
/** How long `quit` waits for the agent to end. */
const QUIT_WAIT_MS = 5000;

/**
 * Whether a failed connect means that no agent listens (so one may be
 * started): no socket, nothing bound to it, or something else at its name
 * (a new agent replaces it). A full backlog (EAGAIN) and the rest do not.
 */
export function noAgent(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === "ENOENT" || code === "ECONNREFUSED" || err instanceof ExecDirFileError;
}

/** What the link's owner does with its connections (see AgentLink). */
export interface AgentLinkHooks {
  /** A new connection is current: route its events (it is not used before this returns). */
  attached(conn: AgentConn): void;
  /** The current connection `conn` closed on its own; `current` is unset already. */
  dropped(conn: AgentConn): void;
}

/**
 * The router's connection to one task agent (native/task-agent.c), through
 * the socket in its exec directory `dir`.
 *
 * Contract:
 * - `connection` resolves with an open connection: the current one, or a
 *   new one to the running agent, or else to an agent it starts first
 *   (`launch`). `reconnect` does the same but never starts an agent (it
 *   rejects when none listens). An agent is started only when none listens
 *   (`noAgent`); another failure to connect (a full backlog) rejects with
 *   UnavailableError. Attempts, and `quit`'s connection, run one at a time,
 *   and one that finds the connection an earlier one made still open takes
 *   it: the agent keeps only its newest connection, so two at once would cut
 *   each other. Both reject once the link is closed or quit.
 * - Every connection it makes becomes `current` and is handed to
 *   `hooks.attached` at once; when the current one closes, other than
 *   after `close` or `quit`, `hooks.dropped` is called once.
 * - `close` drops the connection only (the agent and its execs run on);
 *   `quit` asks the agent to end (and every exec with it) and waits for it,
 *   up to QUIT_WAIT_MS.
 */
export class AgentLink {
  private conn: AgentConn | undefined;
  /** The last connection attempt (settled or not): the next one runs after it. */
  private attempts: Promise<unknown> = Promise.resolve();
  private closing = false;

  constructor(
    readonly dir: string,
    private readonly launch: AgentLauncher,
    private readonly hooks: AgentLinkHooks,
  ) {}

  /** The latest connection while it is current (it may have closed since). */
  get current(): AgentConn | undefined {
    return this.conn;
  }

  /** The connection, reconnecting to (or starting) the agent when there is none. */
  connection(): Promise<AgentConn> {
    if (this.conn && !this.conn.isClosed && !this.closing) return Promise.resolve(this.conn);
    return this.serially(true);
  }

  /** The open connection, or a new one to the running agent (never starts one). */
  reconnect(): Promise<AgentConn> {
    return this.serially(false);
  }

  private serially(launch: boolean): Promise<AgentConn> {
    return this.queued(async () => {
      if (this.closing) throw connectionClosed();
      if (this.conn && !this.conn.isClosed) return this.conn;
      return this.connect(launch);
    });
  }

  /** Runs `fn` after every earlier attempt settled. */
  private queued<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.attempts.then(fn, fn);
    this.attempts = p.catch(() => undefined);
    return p;
  }

  private async connect(launch: boolean): Promise<AgentConn> {
    if (launch) await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const conn = await AgentConn.connect(this.dir).catch(async (err: unknown) => {
      if (!noAgent(err)) {
        throw new UnavailableError(`the task agent does not take a connection: ${String(err)}`);
      }
      if (!launch) throw err;
      await this.launch(this.dir);
      return AgentConn.connect(this.dir);
    });
    if (this.closing) {
      conn.close(); // closed or quit meanwhile (a launch takes a while)
      throw connectionClosed();
    }
    this.attach(conn);
    return conn;
  }

  private attach(conn: AgentConn): void {
    this.conn = conn;
    this.hooks.attached(conn);
    void conn.closed.then(() => {
      if (this.closing || this.conn !== conn) return;
      this.conn = undefined;
      this.hooks.dropped(conn);
    });
  }

  /**
   * The agent's execs, asked on the open connection or a new one; undefined
   * when no agent listens (`noAgent`). No deadline: a live agent answers,
   * however late, and a connection given up would lose the requests sent on
   * it since. Only a connection that closes is replaced, LIST_TRIES times at
   * most (an agent that keeps cutting its connections counts as gone).
   */
  async listed(): Promise<AgentExecState[] | undefined> {
    for (let i = 0; i < LIST_TRIES; i++) {
      let conn: AgentConn;
      try {
        conn = await this.reconnect();
      } catch (err) {
        if (noAgent(err)) return undefined;
        await sleep(100 * (i + 1)); // a full backlog: give it a moment
        continue;
      }
      const states = await conn.list().catch(() => undefined);
      if (states) return states;
    }
    return undefined;
  }

  /** Ends the agent and every exec it runs (the task is destroyed). */
  async quit(): Promise<void> {
    this.closing = true;
    // After any attempt in flight: its connection, not a newer one of ours, is the agent's.
    const conn = await this.queued(async () =>
      this.conn && !this.conn.isClosed
        ? this.conn
        : AgentConn.connect(this.dir).catch(() => undefined),
    );
    if (!conn) return;
    conn.keepAlive(true);
    conn.send(["quit"]);
    await answered(conn.closed, QUIT_WAIT_MS);
    conn.close();
  }

  /** Drops the connection; the agent and its execs run on (router shutdown). */
  close(): void {
    this.closing = true;
    this.conn?.close();
  }
}
