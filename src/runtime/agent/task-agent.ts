import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { unlink } from "node:fs/promises";
import { join } from "node:path";
import type { AdoptedProc, Proc, SpawnSpec } from "../runtime.ts";
import { type AgentExecState, connectionClosed } from "./agent-conn.ts";
import { type AgentLauncher, AgentLink } from "./agent-link.ts";
import { AgentProc } from "./agent-proc.ts";
import { regularSize } from "./exec-dir-files.ts";
import { execFields, type RecordedExit, readExits, refusal } from "./exec-files.ts";
import { ExecJournal } from "./journal.ts";
import { stdinWritten } from "./stdin-ring.ts";

/** The first half of every exec KEY this router makes (see `start`). */
const KEY_PREFIX = randomBytes(8).toString("hex");
let keySeq = 0;
/** How long a release waits for an exec's streams to end before dropping it anyway. */
const RELEASE_WAIT_MS = 30_000;
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
 *   means so) or cannot be reached (then the next spawn starts a new agent).
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
    this.link = new AgentLink(dir, launch, {
      attached: (conn) => {
        for (const [key, p] of this.procs) conn.on(key, (e) => p.onEvent(e));
        this.updateRef();
      },
      dropped: () => void this.onDropped(),
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

  /** The connection dropped: reconnect and resync, or end the execs of a dead agent. */
  private async onDropped(): Promise<void> {
    const live = [...this.procs.values()].filter((p) => p.running);
    if (live.length === 0) return;
    let states: AgentExecState[] | undefined;
    try {
      states = await (await this.link.reconnect()).list();
    } catch {
      states = undefined;
    }
    const byKey = new Map(states?.map((s) => [s.key, s]));
    const exits = this.exits();
    for (const p of live) this.apply(p, byKey.get(p.key), exits);
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
    const file = (s: string) => join(this.dir, `${p.key}.${s}`);
    if (state) this.agentKeys.add(p.key);
    else this.agentKeys.delete(p.key);
    if (!state) {
      const ended = exits.get(p.key);
      p.lost(ended?.status ?? { signal: 9 }, {
        out: regularSize(file("out")),
        err: regularSize(file("err")),
      });
      return;
    }
    if (state.pid > 0) p.pid = state.pid;
    p.output.stdout.grow(state.outLen);
    p.output.stderr.grow(state.errLen);
    if (state.outEnded) p.output.stdout.end(state.outLen);
    if (state.errEnded) p.output.stderr.end(state.errLen);
    p.stdin.progress(state.inPos);
    if (state.inEnded) p.stdin.inEnded();
    if (!state.running) p.exit(state.exit ?? exits.get(p.key)?.status ?? { signal: 9 });
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
    conn.keepAlive(true);
    // Unique across routers (the agent refuses a KEY it has seen): a random prefix, a counter.
    const key = `${KEY_PREFIX}${(++keySeq).toString(16).padStart(16, "0")}`;
    this.loadJournal();
    if (spec.persist) this.journal.add(key, spec.persist.record);
    const ring = this.rings;
    const p = this.newProc(key, { written: 0, closed: false }, ring);
    const started = (withRing: boolean) =>
      new Promise<void>((resolve, reject) => {
        if (conn.isClosed) return reject(connectionClosed());
        // Heeds the close only until answered: nothing of the exec (p, its spec and env) stays held.
        let off = () => {};
        conn.on(key, (e) => {
          if (e.kind !== "started" && e.kind !== "error") return;
          off();
          if (e.kind === "error") return reject(refusal(e.args[0] ?? ""));
          p.pid = Number(e.args[0]);
          this.agentKeys.add(key);
          conn.on(key, (ev) => p.onEvent(ev));
          resolve();
        });
        conn.send(execFields(key, spec, this.opts.debug, withRing)); // a throw registers nothing
        off = conn.onClose(reject);
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
    const ends = Promise.all(
      [p.output.stdout, p.output.stderr].map(async (o) => {
        while (!o.ended) await o.changed();
      }),
    );
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      ends,
      new Promise((r) => {
        timer = setTimeout(r, RELEASE_WAIT_MS).unref();
      }),
    ]);
    clearTimeout(timer);
    await this.drop(key, !p.busy);
  }

  /** The execs an earlier router left here (Runtime.adopt). */
  async adopt(): Promise<AdoptedProc[]> {
    if (!existsSync(this.dir)) return [];
    const entries = this.loadJournal();
    if (entries.size === 0) return [];
    const conn = await this.link.connection().catch(() => undefined);
    const listed = conn ? await conn.list().catch(() => undefined) : undefined;
    const known = listed && new Map(listed.map((s) => [s.key, s]));
    const exits = this.exits(); // after the list: a line is written before its `exit` event
    const adopted: AdoptedProc[] = [];
    for (const [key, entry] of entries) {
      const file = (s: string) => join(this.dir, `${key}.${s}`);
      const state = known?.get(key);
      const ended = exits.get(key);
      if (known && !state && !ended) {
        await this.drop(key, false); // never reached the agent: a retry starts it afresh
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
    const again = conn ? await conn.list().catch(() => undefined) : undefined;
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
