import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { unlink } from "node:fs/promises";
import { join } from "node:path";
import { answered } from "../../util/deadline.ts";
import type { AdoptedProc, Proc, SpawnSpec } from "../runtime.ts";
import type { AgentConn, AgentExecState } from "./agent-conn.ts";
import { type AgentLauncher, AgentLink } from "./agent-link.ts";
import { AgentProc } from "./agent-proc.ts";
import { execFields, type RecordedExit, readExits, requestStart } from "./exec-files.ts";
import { ExecJournal } from "./journal.ts";
import { stdinWritten } from "./stdin-ring.ts";

/** The first half of every exec KEY this router makes (see `start`). */
const KEY_PREFIX = randomBytes(8).toString("hex");
let keySeq = 0;
/** How long a release waits for an exec's streams to end before dropping it anyway. */
const RELEASE_WAIT_MS = 30_000;
/** How long a restart's adoption waits for an agent's `list` (a guard: a live agent answers in ms, even with thousands of execs). */
const ADOPT_LIST_WAIT_MS = 10_000;
/** The agent's record of every exit (native/task-agent.c). */
const EXITS = "exits";

/**
 * The router's side of one task's agent (native/task-agent.c): it starts
 * execs through the agent and keeps the AgentProc of each until released.
 *
 * Contract:
 * - `spawn` resolves once the agent started the command (a command that
 *   cannot be found still starts and exits 127, as the agent reports it);
 *   it throws when the agent refuses (ResourceExhausted for an errno that
 *   means so) or provably never got the request (then a retry runs it; the
 *   next spawn starts a new agent if none listens). A command runs at most
 *   once: when the connection closes before the answer, the agent is asked
 *   again (`resync`); an exec it lists stands, and one that went to an agent
 *   that is gone since is returned as lost (SIGKILLed), since it may have run.
 * - When the connection drops the agent is reconnected; when the agent is
 *   gone, every exec it ran ends with the status in its `exits` line, or as
 *   SIGKILLed, with the output its files hold.
 * - `adopt` hands back the execs an earlier router left (see Runtime.adopt).
 * - `close` drops the connection only (the agent and its execs run on);
 *   `quit` ends the agent and every exec (SIGKILL).
 */
export class TaskAgent {
  /** The connection to the agent (agent-link.ts). */
  private readonly link: AgentLink;
  private readonly procs = new Map<string, AgentProc>();
  /** Execs the agent holds (it removes their files on `forget`). */
  private readonly agentKeys = new Set<string>();
  private starts = 0;
  /** Agents launched for this directory by this router (the launcher counts them). */
  private launches = 0;
  /** Execs sent to the agent and not answered yet, with `launches` when each was sent. */
  private readonly unanswered = new Map<string, number>();
  /** The resync after each closed connection (one, shared by the link's hook and cut starts). */
  private readonly resyncs = new WeakMap<AgentConn, Promise<void>>();
  /** The last resync: each runs after the one before (it sees what that one settled). */
  private lastResync: Promise<void> = Promise.resolve();
  /** False once this agent refused flag `i` (one older than the stdin ring): KEY.in is linear then. */
  private rings = true;
  /** The exec records (SpawnSpec.persist), loaded by `adopt` or the first spawn. */
  private readonly journal: ExecJournal;
  private journalLoaded = false;

  constructor(
    readonly dir: string,
    launch: AgentLauncher,
    private readonly opts: {
      oomKills?: () => number | undefined;
      /**
       * `runtime_debug` execs ask the agent for CAP_SYS_PTRACE (it was started
       * with `-d`); false: the flag means nothing here (host: every exec
       * already has the router's powers) and is not passed on.
       */
      debug: boolean;
    },
  ) {
    this.journal = new ExecJournal(dir);
    const launchCounted = async (d: string) => {
      this.launches++;
      this.journal.agentLaunched(); // before: a crash mid-launch must not leave it unrecorded
      await launch(d);
    };
    this.link = new AgentLink(dir, launchCounted, {
      attached: (conn) => {
        for (const [key, p] of this.procs) conn.on(key, (e) => p.onEvent(e));
        this.updateRef();
      },
      dropped: (conn) => void this.resyncAfter(conn),
    });
  }

  /** Whether this agent's execs get stdin rings: false once it refused flag `i` (an older agent). */
  get stdinRings(): boolean {
    return this.rings;
  }

  /** The journal's live entries (read once: before the first append). */
  private loadJournal() {
    if (this.journalLoaded) return new Map();
    this.journalLoaded = true;
    return this.journal.load();
  }

  /** The connection `conn` closed: one resync for it (see resync), however many ask. */
  private resyncAfter(conn: AgentConn): Promise<void> {
    let r = this.resyncs.get(conn);
    if (!r) {
      r = this.lastResync.then(() => this.resync());
      this.lastResync = r;
      this.resyncs.set(conn, r);
    }
    return r;
  }

  /**
   * Asks the agent (the current connection, or a new one to the agent that
   * listens) for its execs and brings every live one up to its state; one it
   * does not list ended (its `exits` line, or SIGKILLed). A start not
   * answered (`unanswered`) that nothing lists never reached the agent when
   * the one answering is the one it was sent to (none launched since): it
   * stays unanswered and its start fails, so a retry runs it. Otherwise it is
   * lost like a running exec, since it may have run.
   */
  private async resync(): Promise<void> {
    const live = [...this.procs.values()].filter((p) => p.running);
    if (live.length === 0) return;
    const states = await this.link.listed();
    const byKey = new Map(states?.map((s) => [s.key, s]));
    const exits = this.exits();
    for (const p of live) {
      const state = byKey.get(p.key);
      const sentAt = this.unanswered.get(p.key);
      if (sentAt !== undefined) {
        const neverReached = states && !state && !exits.has(p.key) && this.launches === sentAt;
        if (neverReached) continue;
        this.unanswered.delete(p.key);
      }
      this.apply(p, state, exits);
    }
  }

  /** The agent's `exits` file, read now (see readExits). */
  private exits(): Map<string, RecordedExit> {
    return readExits(join(this.dir, EXITS));
  }

  /** Brings `p` up to `state`; no state: the agent lost it (or is gone). */
  private apply(
    p: AgentProc,
    state: AgentExecState | undefined,
    exits: Map<string, RecordedExit>,
  ): void {
    if (state) this.agentKeys.add(p.key);
    else this.agentKeys.delete(p.key);
    p.sync(state, exits.get(p.key)?.status);
  }

  private newProc(
    key: string,
    stdin: { written: number; closed: boolean },
    ring: boolean,
  ): AgentProc {
    const p = new AgentProc({
      key,
      dir: this.dir,
      ring,
      send: (fields) => this.link.current?.send(fields),
      stdin,
      oomKills: this.opts.oomKills,
      release: () => this.release(key),
      settled: () => this.updateRef(),
      stdinEof: () => this.journal.stdinClosed(key),
    });
    this.procs.set(key, p);
    this.link.current?.on(key, (e) => p.onEvent(e));
    return p;
  }

  /** The connection keeps the loop alive while an exec starts, runs or has output to come. */
  private updateRef(): void {
    const busy = this.starts > 0 || [...this.procs.values()].some((p) => p.busy);
    this.link.current?.keepAlive(busy);
  }

  /** Starts `spec` (argv[0] searched in the PATH of its env, inside the task). */
  async spawn(spec: SpawnSpec): Promise<Proc> {
    this.starts++;
    try {
      return await this.start(spec);
    } finally {
      this.starts--;
      this.updateRef();
    }
  }

  private async start(spec: SpawnSpec): Promise<Proc> {
    const conn = await this.link.connection();
    const sentAt = this.launches; // the agent `conn` reaches: none launched since
    conn.keepAlive(true);
    // Unique across routers (the agent refuses a KEY it has seen): a random prefix, a counter.
    const key = `${KEY_PREFIX}${(++keySeq).toString(16).padStart(16, "0")}`;
    this.loadJournal();
    if (spec.persist) this.journal.add(key, spec.persist.record);
    const ring = this.rings;
    const p = this.newProc(key, { written: 0, closed: false }, ring);
    const started = (withRing: boolean) =>
      requestStart(conn, key, execFields(key, spec, this.opts.debug, withRing), {
        sending: () => this.unanswered.set(key, sentAt),
        answered: () => this.unanswered.delete(key),
        started: (pid) => {
          p.pid = pid;
          this.agentKeys.add(key);
          conn.on(key, (ev) => p.onEvent(ev));
        },
      });
    try {
      await started(ring).catch(async (err: unknown) => {
        // An agent older than the stdin ring refuses flag `i` (no state kept): once more without,
        // and no rings for this agent if that is what it refused.
        if (!ring || !(err instanceof Error) || !/bad-request/.test(err.message)) throw err;
        p.stdin.linear();
        await started(false);
        this.rings = false;
      });
      return p;
    } catch (err) {
      if (this.unanswered.has(key)) {
        // The connection closed after the request went out: the agent may have started it.
        await this.resyncAfter(conn);
        if (!this.unanswered.delete(key)) return p; // it stands, running or lost: never run twice
      }
      await this.drop(key, false);
      throw err;
    }
  }

  /**
   * Forgets exec `key` here and in the agent (which removes the files of a
   * reaped exec whose streams ended); the record goes first. Files the
   * agent cannot have removed (it still runs the exec, or is gone) are
   * removed here.
   */
  private async drop(key: string, agentHasIt: boolean): Promise<void> {
    this.procs.delete(key);
    const conn = this.link.current;
    conn?.off(key);
    this.updateRef();
    this.journal.remove(key);
    const held = this.agentKeys.delete(key);
    if (agentHasIt && held && conn && !conn.isClosed) {
      conn.send(["forget", key]);
      return;
    }
    // unlink: whatever a task put at these names (a symlink is removed, not its target).
    await Promise.all(
      ["in", "inlen", "out", "err", "exit", "kept", "kept.new"].map((s) =>
        unlink(join(this.dir, `${key}.${s}`)).catch(() => {}),
      ),
    );
  }

  private async release(key: string): Promise<void> {
    const p = this.procs.get(key);
    if (!p) return;
    // The agent forgets an exec only once its streams ended (bounded: a release always frees).
    await p.streamsEnded(RELEASE_WAIT_MS);
    await this.drop(key, !p.busy);
  }

  /** The execs an earlier router left here (Runtime.adopt). */
  async adopt(): Promise<AdoptedProc[]> {
    if (!existsSync(this.dir)) return [];
    const entries = this.loadJournal();
    if (entries.size === 0) return [];
    const conn = await this.link.connection().catch(() => undefined);
    // Bounded, unlike a resync's: tasks are adopted one by one before the router serves, so a
    // task that stopped its own agent must not keep the router down (its execs are lost then).
    const listed = conn ? await answered(conn.list(), ADOPT_LIST_WAIT_MS) : undefined;
    const known = listed && new Map(listed.map((s) => [s.key, s]));
    const exits = this.exits(); // after the list: a line is written before its `exit` event
    const adopted: AdoptedProc[] = [];
    for (const [key, entry] of entries) {
      const file = (s: string) => join(this.dir, `${key}.${s}`);
      const state = known?.get(key);
      const ended = exits.get(key);
      // Never reached the agent that lists, which is the one it went to (none launched since, and
      // the journal would say): a retry starts it afresh. Otherwise it may have run: lost.
      if (known && !state && !ended && !entry.earlierAgent && this.launches === 0) {
        await this.drop(key, false);
        continue;
      }
      // The agent says whether KEY.in is a ring (an older one never has rings).
      const stdin = { written: stdinWritten(file("in"), state?.inRing), closed: entry.stdinClosed };
      const p = this.newProc(key, stdin, state?.inRing === true);
      this.apply(p, state, exits);
      adopted.push({
        record: entry.record,
        proc: p,
        stdin,
        ...(ended ? { endedAt: ended.at } : {}),
      });
    }
    // Events sent between the list and the handlers: a second look catches them.
    const again = listed && conn ? await answered(conn.list(), ADOPT_LIST_WAIT_MS) : undefined;
    const againByKey = new Map(again?.map((s) => [s.key, s]));
    for (const a of adopted) {
      const p = a.proc as AgentProc;
      const s = againByKey.get(p.key);
      if (s) this.apply(p, s, exits);
    }
    return adopted;
  }

  /** Ends the agent and every exec it runs (the task is destroyed). */
  quit(): Promise<void> {
    return this.link.quit();
  }

  /** Drops the connection; the agent and its execs run on (router shutdown). */
  close(): void {
    this.link.close();
    this.journal.close();
  }
}
