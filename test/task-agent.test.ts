import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  appendFileSync,
  closeSync,
  constants,
  existsSync,
  fsyncSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, it, type TestContext } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { nativeHelper } from "../src/runtime/native.ts";

const AGENT = nativeHelper("taskrouter-agent");
const ENV = ["PATH=/usr/bin:/bin"];
/** How long a test waits for an event before failing (a hang guard, not a timing assertion). */
const WAIT_MS = 30_000;
const isRoot = process.getuid?.() === 0;

/** One request: a 4-byte little-endian length, then NUL-terminated fields. */
function frame(fields: string[]): Buffer {
  const body = Buffer.concat(fields.flatMap((f) => [Buffer.from(f), Buffer.alloc(1)]));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(body.length);
  return Buffer.concat([len, body]);
}

function sha256(data: Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

/** The fields of /proc/<pid>/stat after the command name (state first), or null when gone. */
function statOf(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
}

/** Live (a zombie is gone: pid 1 here may not reap orphans). */
/** Waits (≤ WAIT_MS) until `pid` blocks in nanosleep/clock_nanosleep (x86-64 35/230, arm64 101/115). */
async function inSleep(pid: number): Promise<void> {
  const calls = process.arch === "arm64" ? ["101", "115"] : ["35", "230"];
  for (const until = Date.now() + WAIT_MS; Date.now() < until; await sleep(5)) {
    const nr = readFileSync(`/proc/${pid}/syscall`, "utf8").split(" ")[0] ?? "";
    if (calls.includes(nr)) return;
  }
  throw new Error(`${pid} never reached its sleep`);
}

function alive(pid: number): boolean {
  const f = statOf(pid);
  return f !== null && f[0] !== "Z";
}

async function waitGone(pids: number[]): Promise<number[]> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const live = pids.filter(alive);
    if (live.length === 0 || Date.now() > deadline) return live;
    await sleep(20);
  }
}

/** SIGKILLs every live process whose session is one of `sessions`, by pid. */
function killSessions(sessions: Set<number>): void {
  if (sessions.size === 0) return;
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const f = statOf(Number(name));
    if (f && f[0] !== "Z" && sessions.has(Number(f[3]))) {
      try {
        process.kill(Number(name), "SIGKILL");
      } catch {
        // already gone
      }
    }
  }
}

/** A router connection: framed requests out, event lines in. */
class Conn {
  readonly lines: string[] = [];
  private readonly taken = new Set<number>();
  private partial = "";
  private readonly waiters = new Set<() => void>();
  ended = false;
  readonly closed: Promise<void>;

  constructor(readonly sock: Socket) {
    sock.setEncoding("utf8");
    sock.on("data", (d: string) => {
      this.partial += d;
      for (let i = this.partial.indexOf("\n"); i >= 0; i = this.partial.indexOf("\n")) {
        this.lines.push(this.partial.slice(0, i));
        this.partial = this.partial.slice(i + 1);
      }
      this.wakeAll();
    });
    sock.on("error", () => {});
    this.closed = new Promise((resolve) =>
      sock.on("close", () => {
        this.ended = true;
        this.wakeAll();
        resolve();
      }),
    );
  }

  private wakeAll(): void {
    for (const w of this.waiters) w();
  }

  send(...fields: string[]): void {
    this.sock.write(frame(fields));
  }

  /** The first line not taken yet that `match` accepts (taken now). */
  async next(match: (line: string) => boolean, what: string): Promise<string> {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      for (let i = 0; i < this.lines.length; i++) {
        const line = this.lines[i] as string;
        if (!this.taken.has(i) && match(line)) {
          this.taken.add(i);
          return line;
        }
      }
      const left = deadline - Date.now();
      if (this.ended || left <= 0) {
        const why = this.ended ? "connection closed" : "timed out";
        throw new Error(`${why} waiting for ${what}; got ${JSON.stringify(this.lines.slice(-20))}`);
      }
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(t);
          this.waiters.delete(wake);
          resolve();
        };
        const t = setTimeout(wake, left);
        this.waiters.add(wake);
      });
    }
  }

  /** The fields after `kind KEY` of the next such event. */
  async event(kind: string, key: string): Promise<string[]> {
    const line = await this.next((l) => l.startsWith(`${kind} ${key} `), `${kind} ${key}`);
    return line.split(" ").slice(2);
  }

  /** True once an event `kind KEY ...` arrived (without taking it). */
  has(kind: string, key: string): boolean {
    return this.lines.some((l) => l.startsWith(`${kind} ${key} `));
  }

  async ping(n: string): Promise<void> {
    this.send("ping", n);
    await this.next((l) => l === `pong ${n}`, `pong ${n}`);
  }

  /** `list`: the state lines by KEY. */
  async list(): Promise<Map<string, string[]>> {
    const tag = String(Math.random()).slice(2);
    this.send("list");
    this.send("ping", tag);
    await this.next((l) => l === `pong ${tag}`, "pong after list");
    const states = new Map<string, string[]>();
    for (;;) {
      const line = await this.next((l) => l === "listed" || l.startsWith("state "), "state");
      if (line === "listed") return states;
      const f = line.split(" ");
      states.set(f[1] as string, f.slice(2));
    }
  }
}

interface ExecOpts {
  flags?: string;
  cap?: number;
  grace?: number;
  deadline?: number;
  rows?: number;
  cols?: number;
  cwd?: string;
  env?: string[];
  stdin?: string | Buffer;
}

interface Result {
  key: string;
  pid: number;
  exit: string;
  out: Buffer;
  err: Buffer;
  outEnd: number;
  errEnd: number;
}

/** A running agent on a temp exec dir; `close` kills what it started, by pid, and removes it. */
class Agent {
  readonly sessions = new Set<number>();
  private readonly conns: Conn[] = [];
  private keys = 0;

  private constructor(
    readonly proc: ChildProcess,
    readonly pid: number,
    readonly dir: string,
    readonly exited: Promise<number | string>,
  ) {}

  static async start(args: string[] = []): Promise<Agent> {
    const dir = mkdtempSync("/tmp/ta-");
    const dirFd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    let proc: ChildProcess;
    try {
      proc = spawn(AGENT, args, { stdio: ["ignore", "pipe", "ignore", dirFd] });
    } finally {
      closeSync(dirFd);
    }
    const exited = new Promise<number | string>((resolve) =>
      proc.on("exit", (code, signal) => resolve(code ?? signal ?? "")),
    );
    const agent = new Agent(proc, proc.pid as number, dir, exited);
    try {
      let text = "";
      await new Promise<void>((resolve, reject) => {
        proc.stdout?.setEncoding("utf8");
        proc.stdout?.on("data", (d: string) => {
          text += d;
          if (text === "ready\n") resolve();
        });
        proc.on("error", reject);
        void exited.then((how) => reject(new Error(`the agent exited (${how}) before ready`)));
      });
    } catch (e) {
      await agent.close();
      throw e;
    }
    return agent;
  }

  async connect(): Promise<Conn> {
    const sock = connect(join(this.dir, "agent.sock"));
    await new Promise<void>((resolve, reject) => {
      sock.once("connect", resolve);
      sock.once("error", reject);
    });
    const c = new Conn(sock);
    this.conns.push(c);
    return c;
  }

  key(): string {
    this.keys += 1;
    return `k${this.keys}`;
  }

  path(key: string, suffix: string): string {
    return join(this.dir, `${key}.${suffix}`);
  }

  read(key: string, suffix: string): Buffer {
    return readFileSync(this.path(key, suffix));
  }

  /** KEY's line in the agent's `exits` file without the key (`code 3 MS`); "" when absent. */
  exitLine(key: string): string {
    const lines = readFileSync(join(this.dir, "exits"), "utf8").split("\n");
    const line = lines.filter((l) => l.startsWith(`${key} `)).pop();
    return line === undefined ? "" : `${line.slice(key.length + 1)}\n`;
  }

  /** Files written before `exec` (stdin's first bytes); the agent creates those still absent. */
  prepare(key: string, flags: string, stdin: string | Buffer = ""): void {
    writeFileSync(this.path(key, "in"), stdin);
    if (flags.includes("o")) writeFileSync(this.path(key, "out"), "");
    if (flags.includes("e")) writeFileSync(this.path(key, "err"), "");
  }

  request(key: string, argv: string[], o: ExecOpts = {}): string[] {
    const env = o.env ?? ENV;
    return [
      "exec",
      key,
      o.flags ?? "oe",
      String(o.cap ?? 0),
      String(o.grace ?? 100),
      String(o.deadline ?? 0),
      String(o.rows ?? 24),
      String(o.cols ?? 80),
      o.cwd ?? "/",
      String(env.length),
      ...env,
      ...argv,
    ];
  }

  /** Prepares the files, sends `exec`, returns the PID of `started`. */
  async start(c: Conn, key: string, argv: string[], o: ExecOpts = {}): Promise<number> {
    this.prepare(key, o.flags ?? "oe", o.stdin);
    c.send(...this.request(key, argv, o));
    const [pid] = await c.event("started", key);
    this.sessions.add(Number(pid));
    return Number(pid);
  }

  /** Waits for `exit` and both stream ends; returns them and the files. */
  async finish(c: Conn, key: string, pid = 0): Promise<Result> {
    const [exit, outEnd, errEnd] = await Promise.all([
      c.event("exit", key),
      c.event("outend", key),
      c.event("errend", key),
    ]);
    // The `exits` line is written before the `exit` event goes out.
    await c.ping(`exit-${key}`);
    const file = (suffix: string) => {
      try {
        return this.read(key, suffix);
      } catch {
        return Buffer.alloc(0);
      }
    };
    return {
      key,
      pid,
      exit: exit.join(" "),
      out: file("out"),
      err: file("err"),
      outEnd: Number(outEnd[0]),
      errEnd: Number(errEnd[0]),
    };
  }

  async run(c: Conn, argv: string[], o: ExecOpts = {}): Promise<Result> {
    const key = this.key();
    const pid = await this.start(c, key, argv, o);
    return this.finish(c, key, pid);
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.sock.destroy();
    killSessions(this.sessions);
    if (alive(this.pid)) this.proc.kill("SIGKILL");
    await this.exited;
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** An agent of the test's own, closed when the test ends (also on failure). */
async function ownAgent(t: TestContext, args: string[] = []): Promise<Agent> {
  const agent = await Agent.start(args);
  t.after(() => agent.close());
  return agent;
}

/** Waits until KEY.out holds a line; returns the file's text. */
async function firstLine(a: Agent, key: string): Promise<string> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const text = a.read(key, "out").toString();
    if (text.includes("\n") || Date.now() > deadline) return text;
    await sleep(20);
  }
}

describe("the task agent (native/task-agent.c)", () => {
  let a: Agent;
  let c: Conn;
  before(async () => {
    a = await Agent.start();
    c = await a.connect();
  });
  after(async () => {
    await a?.close();
  });

  it("answers ping with pong", async () => {
    await c.ping("1");
    await c.ping("abc");
  });

  it("copies stdout and stderr into their files byte for byte, and records the exit in `exits`", async () => {
    const t0 = Date.now();
    const r = await a.run(c, ["sh", "-c", 'printf "a\\000b\\n"; printf "err\\377\\n" >&2; exit 3']);
    assert.equal(r.exit, "code 3");
    assert.deepEqual(r.out, Buffer.from("a\0b\n"));
    assert.deepEqual(r.err, Buffer.from("err\xff\n", "latin1"));
    assert.equal(r.outEnd, 4);
    assert.equal(r.errEnd, 5);
    const exitLine = a.exitLine(r.key);
    const m = /^code 3 (\d+)\n$/.exec(exitLine);
    assert.ok(m, exitLine);
    assert.ok(Number(m[1]) >= t0 && Number(m[1]) <= Date.now(), exitLine);
    assert.equal(statSync(join(a.dir, "exits")).mode & 0o777, 0o600);
    assert.ok(!existsSync(a.path(r.key, "exit")), "no file per exit");
  });

  it("copies 8 MiB of output exactly (splice at its own offset)", async () => {
    const data = randomBytes(8 << 20);
    writeFileSync(join(a.dir, "data"), data);
    const r = await a.run(c, ["cat", join(a.dir, "data")]);
    assert.equal(r.exit, "code 0");
    assert.equal(r.outEnd, 8 << 20);
    assert.equal(sha256(r.out), sha256(data));
  });

  it("merges stderr into stdout in write order with m (KEY.err untouched, errend 0)", async () => {
    const r = await a.run(c, ["sh", "-c", "echo 1; echo 2 >&2; echo 3; echo 4 >&2"], {
      flags: "om",
    });
    assert.equal(r.out.toString(), "1\n2\n3\n4\n");
    assert.equal(r.errEnd, 0);
    assert.equal(r.err.length, 0);
  });

  it("feeds stdin from KEY.in as `in` grows it; `eof` closes it (cat echoes it exactly)", async () => {
    const key = a.key();
    await a.start(c, key, ["cat"], { flags: "o", stdin: "hello " });
    c.send("in", key, "6");
    appendFileSync(a.path(key, "in"), "world\n");
    c.send("in", key, "12");
    c.send("eof", key, "12");
    assert.deepEqual(await c.event("inend", key), ["12"]);
    const r = await a.finish(c, key);
    assert.equal(r.exit, "code 0");
    assert.equal(r.out.toString(), "hello world\n");
  });

  it("feeds a 16 MiB stdin in pieces", async () => {
    const key = a.key();
    const data = randomBytes(16 << 20);
    await a.start(c, key, ["cat"], { flags: "o" });
    for (let i = 0; i < 4; i++) {
      appendFileSync(a.path(key, "in"), data.subarray(i << 22, (i + 1) << 22));
      c.send("in", key, String((i + 1) << 22));
    }
    c.send("eof", key, String(16 << 20));
    assert.deepEqual(await c.event("inend", key), [String(16 << 20)]);
    const r = await a.finish(c, key);
    assert.equal(r.outEnd, 16 << 20);
    assert.equal(sha256(r.out), sha256(data));
  });

  it("frees KEY.in below what the command took (holes, size kept): stdin is never written back", async () => {
    const key = a.key();
    const data = randomBytes(40 << 20);
    // Slow to take it: bytes spliced into the pipe are the page cache's own pages and must
    // never be punched there (test/wire-stdin-cuts.test.ts caught that with 1 GiB).
    await a.start(c, key, ["sh", "-c", "sleep 0.2; sha256sum"], { flags: "o" });
    for (let i = 0; i < 10; i++) {
      appendFileSync(a.path(key, "in"), data.subarray(i << 22, (i + 1) << 22));
      c.send("in", key, String((i + 1) << 22));
    }
    c.send("eof", key, String(40 << 20));
    assert.deepEqual(await c.event("inend", key), [String(40 << 20)]);
    const st = statSync(a.path(key, "in"));
    assert.equal(st.size, 40 << 20, "the size still counts every byte written");
    assert.ok(st.blocks * 512 <= 8 << 20, `${st.blocks * 512} bytes of KEY.in still allocated`);
    const r = await a.finish(c, key);
    assert.equal(r.exit, "code 0");
    assert.equal(r.out.toString().split(" ")[0], sha256(data), "the command got every byte");
  });

  it("flag i: KEY.in is a 64 MiB ring (byte L at L mod 64 MiB), never punched; RING in `state`", async () => {
    const RING = 64 << 20;
    const key = a.key();
    const first = randomBytes(RING);
    const next = randomBytes(3 << 20);
    await a.start(c, key, ["sha256sum"], { flags: "oi" });
    writeFileSync(a.path(key, "in"), first);
    c.send("in", key, String(RING));
    // The wrap: the next bytes go over slots the command has taken (its `inpos`).
    for (let pos = 0; pos < next.length; ) pos = Number((await c.event("inpos", key))[0]);
    const fd = openSync(a.path(key, "in"), "r+");
    writeSync(fd, next, 0, next.length, 0);
    closeSync(fd);
    c.send("eof", key, String(RING + next.length));
    assert.deepEqual(await c.event("inend", key), [String(RING + next.length)]);
    const st = statSync(a.path(key, "in"));
    assert.equal(st.size, RING, "a ring never grows past its size");
    assert.ok(st.blocks * 512 >= RING, "nothing of a ring is punched");
    const states = await c.list();
    assert.equal(states.get(key)?.[8], "1", "RING is 1 for a ring exec");
    const r = await a.finish(c, key);
    assert.equal(r.out.toString().split(" ")[0], sha256(Buffer.concat([first, next])));
    // `forget` removes the ring's count file (the router's) with the other files.
    writeFileSync(a.path(key, "inlen"), Buffer.alloc(8));
    c.send("forget", key);
    await c.ping("ring");
    assert.ok(!existsSync(a.path(key, "inlen")) && !existsSync(a.path(key, "in")));
  });

  it("frees KEY.in safely while the command splices its stdin onward (bytes held downstream)", async () => {
    // A command that moves its stdin on with splice(2) into a 1 MiB pipe that a slow reader
    // drains: whatever pages it got from its stdin stay referenced downstream.
    const src = join(a.dir, "splicer.c");
    const bin = join(a.dir, "splicer");
    writeFileSync(
      src,
      `#define _GNU_SOURCE
#include <fcntl.h>
int main(void) {
  fcntl(1, F_SETPIPE_SZ, 1 << 20);
  for (;;) {
    long n = splice(0, 0, 1, 0, 1 << 20, 0);
    if (n <= 0) return n < 0;
  }
}
`,
    );
    execFileSync("cc", ["-O2", "-o", bin, src]);
    const key = a.key();
    const data = randomBytes(48 << 20);
    await a.start(c, key, ["sh", "-c", `'${bin}' | (sleep 0.3; sha256sum)`], { flags: "o" });
    for (let i = 0; i < 12; i++) {
      appendFileSync(a.path(key, "in"), data.subarray(i << 22, (i + 1) << 22));
      c.send("in", key, String((i + 1) << 22));
    }
    c.send("eof", key, String(48 << 20));
    assert.deepEqual(await c.event("inend", key), [String(48 << 20)]);
    const r = await a.finish(c, key);
    assert.equal(r.exit, "code 0");
    assert.equal(r.out.toString().split(" ")[0], sha256(data), "the command got every byte");
    assert.ok(statSync(a.path(key, "in")).blocks * 512 <= 16 << 20, "KEY.in was freed");
  });

  it("`seen` drops a stream's bytes below OFFSET from the page cache; the file keeps them", async () => {
    const size = 80 << 20;
    const r = await a.run(c, ["head", "-c", String(size), "/dev/zero"]);
    assert.equal(r.outEnd, size);
    const out = a.path(r.key, "out");
    const fd = openSync(out, "r");
    fsyncSync(fd); // clean pages: DONTNEED drops them at once
    closeSync(fd);
    const resident = () =>
      Number(execFileSync("fincore", ["-b", "-n", "-o", "RES", out], { encoding: "utf8" }));
    assert.ok(resident() >= 64 << 20, `${resident()} bytes in the page cache after a read`);
    c.send("seen", r.key, "out", String(size));
    await c.ping("s1");
    // [size - 64 MiB, size) dropped: what stays is below it.
    assert.ok(resident() <= 16 << 20, `${resident()} bytes still in the page cache`);
    assert.ok(readFileSync(out).equals(Buffer.alloc(size)), "every byte still in the file");
    // Stateless: an unknown KEY or an absent file is no error; a bad request is one.
    c.send("seen", a.key(), "err", "4096");
    c.send("seen", r.key, "in", "4096");
    assert.deepEqual(await c.event("error", r.key), ["bad-request"]);
    c.send("seen", r.key, "out", "-1");
    assert.deepEqual(await c.event("error", r.key), ["bad-request"]);
    // A FIFO planted under the name never blocks the agent.
    const key = a.key();
    execFileSync("mkfifo", [a.path(key, "out")]);
    c.send("seen", key, "out", String(size));
    await c.ping("s2");
  });

  it("ends stdin with `inend` when the command closes it (EPIPE)", async () => {
    const key = a.key();
    const size = 4 << 20;
    await a.start(c, key, ["head", "-c", "1"], { flags: "o", stdin: randomBytes(size) });
    c.send("in", key, String(size));
    const [n] = await c.event("inend", key);
    assert.ok(Number(n) < size, `inend at ${n}`);
    const r = await a.finish(c, key);
    assert.equal(r.exit, "code 0");
    assert.equal(r.out.length, 1);
    c.send("in", key, String(size)); // ignored now
    c.send("eof", key, String(size));
    await c.ping("after-inend");
    assert.ok(!c.has("error", key));
  });

  it("runs a command on a terminal with t (a /dev/pts slave, resized on request)", async () => {
    const tty = await a.run(c, ["tty"], { flags: "ot" });
    assert.equal(tty.exit, "code 0");
    assert.match(tty.out.toString(), /^\/dev\/pts\/\d+\r\n$/);
    assert.equal(tty.errEnd, 0);

    const quiet = await a.run(c, ["sh", "-c", "echo discarded"], { flags: "t" });
    assert.equal(quiet.exit, "code 0");
    assert.equal(quiet.outEnd, 0); // read and dropped: the end comes at the exit

    const size = await a.run(c, ["stty", "size"], { flags: "ot", rows: 24, cols: 80 });
    assert.equal(size.out.toString(), "24 80\r\n");

    const key = a.key();
    await a.start(c, key, ["sh", "-c", 'read x; stty size; echo "got $x"'], {
      flags: "ot",
      stdin: "go\n",
    });
    c.send("resize", key, "33", "111");
    c.send("in", key, "3");
    c.send("eof", key, "3");
    const r = await a.finish(c, key);
    assert.equal(r.exit, "code 0");
    assert.match(r.out.toString(), /33 111\r\ngot go\r\n$/);
  });

  it("`kill` signals the whole process group (a grandchild too)", async () => {
    const key = a.key();
    await a.start(c, key, ["sh", "-c", "sleep 1000 & echo $!; wait"], { flags: "o" });
    const grandchild = Number((await firstLine(a, key)).trim());
    assert.ok(alive(grandchild));
    c.send("kill", key, "15");
    const r = await a.finish(c, key);
    assert.equal(r.exit, "signal 15");
    assert.deepEqual(await waitGone([grandchild]), []);
    c.send("kill", key, "9"); // ignored once reaped
    await c.ping("after-kill");
    assert.ok(!c.has("error", key));
  });

  it("SIGKILLs the group at DEADLINE", async () => {
    const key = a.key();
    await a.start(c, key, ["sh", "-c", "sleep 1000 & echo $!; wait"], {
      flags: "o",
      deadline: Date.now() + 300,
    });
    const grandchild = Number((await firstLine(a, key)).trim());
    const r = await a.finish(c, key);
    assert.equal(r.exit, "signal 9");
    assert.match(a.exitLine(key), /^signal 9 \d+\n$/);
    assert.deepEqual(await waitGone([grandchild]), []);
  });

  it("stops reading at CAP: the file holds exactly CAP bytes and the command blocks", async () => {
    const key = a.key();
    const cap = 100_000;
    await a.start(c, key, ["yes"], { flags: "oe", cap });
    await c.next((l) => l === `out ${key} ${cap}`, `out ${key} ${cap}`);
    const running = await c.list();
    assert.equal(running.get(key)?.[1], "run"); // blocked in write, not ended
    c.send("kill", key, "9");
    const r = await a.finish(c, key);
    assert.equal(r.exit, "signal 9");
    assert.equal(r.outEnd, cap);
    assert.equal(r.out.length, cap);

    // Both files count: at most CAP together (killed once the cap is reached, however long
    // the two writers took to get there).
    const key2 = a.key();
    await a.start(c, key2, ["sh", "-c", "yes err >&2 & yes out"], { flags: "oe", cap: 10_000 });
    const size = (f: string) => statSync(a.path(key2, f), { throwIfNoEntry: false })?.size ?? 0;
    const held = () => size("out") + size("err");
    for (const until = Date.now() + WAIT_MS; held() < 10_000 && Date.now() < until; ) {
      await sleep(20);
    }
    c.send("kill", key2, "9");
    const both = await a.finish(c, key2);
    assert.equal(both.exit, "signal 9");
    assert.equal(both.outEnd + both.errEnd, 10_000);
    assert.equal(both.out.length + both.err.length, 10_000);
  });

  it("cuts a pipe a background descendant holds after GRACE", async () => {
    const key = a.key();
    await a.start(c, key, ["sh", "-c", "sleep 100 & echo hi"], { flags: "oe", grace: 200 });
    const r = await a.finish(c, key);
    assert.equal(r.exit, "code 0");
    assert.equal(r.outEnd, 3);
    assert.equal(r.out.toString(), "hi\n");
    assert.equal(r.errEnd, 0);
  });

  it("reports a command not found as started, 127, the message in KEY.err", async () => {
    const r = await a.run(c, ["no-such-command-xyz"]);
    assert.equal(r.exit, "code 127");
    assert.equal(r.err.toString(), "taskrouter: no-such-command-xyz: command not found\n");
    assert.equal(r.errEnd, r.err.length);
    assert.equal(r.outEnd, 0);
    assert.match(a.exitLine(r.key), /^code 127 \d+\n$/);
    // PATH is the command's own.
    const noPath = await a.run(c, ["env"], { env: ["PATH=/nonexistent"] });
    assert.equal(noPath.exit, "code 127");
    // With m the message goes to KEY.out.
    const merged = await a.run(c, ["no-such-command-xyz"], { flags: "om" });
    assert.equal(merged.out.toString(), "taskrouter: no-such-command-xyz: command not found\n");
  });

  it("reports a file it may not run as 126 Permission denied", async () => {
    const file = join(a.dir, "noexec");
    writeFileSync(file, "echo no\n", { mode: 0o644 });
    const r = await a.run(c, [file]);
    assert.equal(r.exit, "code 126");
    assert.equal(r.err.toString(), `taskrouter: ${file}: Permission denied\n`);
  });

  it("runs a script without #! with /bin/sh (execvp rules)", async () => {
    const file = join(a.dir, "script");
    writeFileSync(file, 'echo "no shebang: $*"\n', { mode: 0o755 });
    const r = await a.run(c, [file, "a", "b"]);
    assert.equal(r.exit, "code 0");
    assert.equal(r.out.toString(), "no shebang: a b\n");
  });

  it("reports a CWD it cannot enter as 126 with the reason", async () => {
    const r = await a.run(c, ["pwd"], { cwd: "/nonexistent-dir" });
    assert.equal(r.exit, "code 126");
    assert.equal(r.err.toString(), "taskrouter: cd /nonexistent-dir: No such file or directory\n");
    const ok = await a.run(c, ["pwd"], { cwd: a.dir });
    assert.equal(ok.out.toString(), `${a.dir}\n`);
  });

  it("refuses a KEY used before, a KEY that is not one, a `d` without -d", async () => {
    const r = await a.run(c, ["true"]);
    c.send(...a.request(r.key, ["true"]));
    assert.deepEqual(await c.event("error", r.key), ["exists"]);
    c.send(...a.request("../x", ["true"]));
    assert.deepEqual(await c.event("error", "-"), ["bad-key"]);
    c.send(...a.request("UPPER", ["true"]));
    assert.deepEqual(await c.event("error", "-"), ["bad-key"]);
    const key = a.key();
    a.prepare(key, "o");
    c.send(...a.request(key, ["true"], { flags: "od" }));
    assert.deepEqual(await c.event("error", key), ["no-debug"]);
    c.send(...a.request(key, ["true"], { flags: "ox" }));
    assert.deepEqual(await c.event("error", key), ["bad-request"]);
    c.send("exec", key, "o");
    assert.deepEqual(await c.event("error", key), ["bad-request"]);
    c.send("frobnicate");
    assert.deepEqual(await c.event("error", "-"), ["bad-request"]);
    // An error keeps no state: the KEY still starts.
    const pid = await a.start(c, key, ["true"], { flags: "o" });
    assert.ok(pid > 0);
    await a.finish(c, key);
  });

  it("refuses a symlink planted as KEY.out (RESOLVE_NO_SYMLINKS)", async () => {
    const key = a.key();
    const target = join(a.dir, "target");
    writeFileSync(target, "");
    writeFileSync(a.path(key, "in"), "");
    symlinkSync(target, a.path(key, "out"));
    // KEY.out is opened at the first byte: ELOOP there ends the stream where it stands (0).
    const pid = await a.start(c, key, ["echo", "leak"], { flags: "o" });
    const r = await a.finish(c, key, pid);
    assert.equal(r.exit, "code 0");
    assert.equal(r.outEnd, 0);
    assert.equal(readFileSync(target, "utf8"), "", "nothing written through the link");
    unlinkSync(a.path(key, "out"));
    const again = a.key();
    const pid2 = await a.start(c, again, ["echo", "ok"], { flags: "o" });
    assert.equal((await a.finish(c, again, pid2)).out.toString(), "ok\n");
  });

  it("gives the command exactly the env sent (default PATH when none)", async () => {
    const env = ["A=1", "B=two words=x", "PATH=/usr/bin:/bin", "EMPTY="];
    const r = await a.run(c, ["env"], { flags: "o", env });
    assert.equal(r.out.toString(), `${env.join("\n")}\n`);
    const none = await a.run(c, ["env"], { flags: "o", env: [] });
    assert.equal(none.exit, "code 0");
    assert.equal(none.out.toString(), "");
  });

  it("starts the child in its own session with fds 0-2 only and default signals", async () => {
    const key = a.key();
    const pid = await a.start(c, key, ["sleep", "1000"], { flags: "oe" });
    try {
      // The exec is done when `started` comes, but the new program's loader still opens its
      // libraries (fd 3, briefly): look once `sleep` waits in its sleep call.
      await inSleep(pid);
      assert.deepEqual(readdirSync(`/proc/${pid}/fd`).sort(), ["0", "1", "2"]);
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      assert.match(status, /^SigIgn:\s+0+$/m);
      assert.match(status, /^SigBlk:\s+0+$/m);
      const f = statOf(pid);
      assert.equal(Number(f?.[2]), pid, "pgid");
      assert.equal(Number(f?.[3]), pid, "sid");
    } finally {
      c.send("kill", key, "9");
    }
    assert.equal((await a.finish(c, key)).exit, "signal 9");
    const sig = await a.run(c, ["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"], {
      flags: "o",
    });
    assert.equal(sig.out.toString(), "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
  });

  it("creates an output file at its stream's first byte (0600), none for a silent stream", async () => {
    const silent = a.key();
    c.send(...a.request(silent, ["sh", "-c", "exit 0"]));
    a.sessions.add(Number((await c.event("started", silent))[0]));
    assert.equal((await a.finish(c, silent)).exit, "code 0");
    for (const f of ["out", "err"]) assert.ok(!existsSync(a.path(silent, f)), `no ${f} file`);
    const outOnly = a.key();
    c.send(...a.request(outOnly, ["echo", "x"]));
    a.sessions.add(Number((await c.event("started", outOnly))[0]));
    assert.equal((await a.finish(c, outOnly)).exit, "code 0");
    assert.equal(a.read(outOnly, "out").toString(), "x\n");
    assert.ok(!existsSync(a.path(outOnly, "err")), "no err file");
  });

  it("creates the output files of an exec that were not made before (0600)", async () => {
    const key = a.key();
    c.send(...a.request(key, ["sh", "-c", "echo out; echo err >&2"]));
    const [pid] = await c.event("started", key);
    a.sessions.add(Number(pid));
    assert.equal((await a.finish(c, key)).exit, "code 0");
    assert.equal(a.read(key, "out").toString(), "out\n");
    assert.equal(a.read(key, "err").toString(), "err\n");
    for (const f of ["out", "err"]) assert.equal(statSync(a.path(key, f)).mode & 0o777, 0o600);
    assert.ok(
      !existsSync(a.path(key, "in")),
      "KEY.in is the router's to create (at the first write)",
    );
  });

  it("rewrites `exits` once forgotten execs are most of it, keeping the lines of the others", async () => {
    const kept = await a.run(c, ["sh", "-c", "exit 7"], { flags: "-" });
    const keys = Array.from({ length: 1100 }, () => a.key());
    for (const key of keys) c.send(...a.request(key, ["true"], { flags: "-" }));
    for (const key of keys) {
      const [pid] = await c.event("started", key);
      a.sessions.add(Number(pid));
      assert.deepEqual(await c.event("exit", key), ["code", "0"]);
    }
    const before = readFileSync(join(a.dir, "exits"), "utf8").split("\n").length - 1;
    assert.ok(before >= 1101, `${before} lines`);
    for (const key of keys) c.send("forget", key);
    await c.ping("forgotten");
    const lines = readFileSync(join(a.dir, "exits"), "utf8").split("\n");
    assert.equal(lines.pop(), "", "ends with a newline");
    assert.ok(lines.length < before / 2, `${lines.length} lines after the rewrite`);
    // Rewritten once 3/4 were forgotten: what was forgotten after that stays until the next one.
    const stale = lines.filter((l) => keys.includes(l.split(" ")[0] ?? "")).length;
    assert.ok(stale < lines.length, `${stale} of ${lines.length} lines are of forgotten execs`);
    assert.match(a.exitLine(kept.key), /^code 7 \d+\n$/);
    assert.ok(!existsSync(join(a.dir, "exits.new")));
    const after = await a.run(c, ["sh", "-c", "exit 5"], { flags: "-" });
    assert.match(a.exitLine(after.key), /^code 5 \d+\n$/, "appends go to the new file");
  });

  it("`forget` drops an ended exec and its files (a KEY stays used); a running one is kept", async () => {
    const done = await a.run(c, ["true"]);
    const key = a.key();
    await a.start(c, key, ["sleep", "1000"]);
    for (const f of ["in", "out", "err"]) assert.ok(existsSync(a.path(done.key, f)), f);
    c.send("forget", done.key);
    c.send("forget", key);
    c.send("forget", "unknown");
    const states = await c.list();
    assert.ok(!states.has(done.key));
    for (const f of ["in", "out", "err"]) assert.ok(!existsSync(a.path(done.key, f)), f);
    assert.ok(existsSync(a.path(key, "out")), "a running exec keeps its files");
    assert.equal(states.get(key)?.[1], "run");
    c.send(...a.request(done.key, ["true"]));
    assert.deepEqual(await c.event("error", done.key), ["exists"]);
    c.send("kill", key, "9");
    await a.finish(c, key);
  });
});

describe("the task agent's connections and lifetime", () => {
  it("closes a connection on a malformed frame and lives on", async (t) => {
    const a = await ownAgent(t);
    const bad = [
      Buffer.from([0, 0, 0, 0]), // length 0
      Buffer.concat([Buffer.from([3, 0, 0, 0]), Buffer.from("pin")]), // unterminated
      Buffer.from([1, 0, 0x40, 0]), // over 4 MiB
    ];
    for (const b of bad) {
      const c = await a.connect();
      await c.ping("before");
      c.sock.write(b);
      await c.closed;
    }
    const c = await a.connect();
    await c.ping("alive");
    assert.ok(alive(a.pid));
  });

  it("closes the previous connection when a new one comes", async (t) => {
    const a = await ownAgent(t);
    const c1 = await a.connect();
    await c1.ping("1");
    const c2 = await a.connect();
    await c1.closed;
    await c2.ping("2");
  });

  it("keeps every exec across reconnects; `list` reports running and ended ones", async (t) => {
    const a = await ownAgent(t);
    let c = await a.connect();
    const run = a.key();
    const runPid = await a.start(c, run, ["sleep", "1000"]);
    const ended = a.key();
    const endedPid = await a.start(c, ended, ["sh", "-c", "echo x; echo yy >&2; exit 4"]);
    await a.finish(c, ended, endedPid);
    await c.event("inend", ended);
    c.sock.destroy();
    c = await a.connect();
    const states = await c.list();
    // The last field, RING, is 0: neither was started with flag `i`.
    const runState = [String(runPid), "run", "0", "0", "0", "0", "0", "0", "0"];
    assert.deepEqual(states.get(run), runState);
    assert.deepEqual(states.get(ended), [
      String(endedPid),
      ...["code:4", "2", "1", "3", "1", "0", "1", "0"],
    ]);
    c.send("kill", run, "9");
    assert.deepEqual(await c.event("exit", run), ["signal", "9"]);
    const after = await c.list();
    assert.equal(after.get(run)?.[1], "signal:9");
  });

  it("outlives its router connection while an exec writes (output complete from 0)", async (t) => {
    const a = await ownAgent(t);
    let c = await a.connect();
    const key = a.key();
    await a.start(c, key, ["seq", "1", "300000"], { flags: "o" });
    c.sock.write(frame(["ping", "x"]).subarray(0, 5)); // and gone mid-frame
    c.sock.destroy();
    c = await a.connect();
    const deadline = Date.now() + WAIT_MS;
    let state: string[] | undefined;
    for (;;) {
      state = (await c.list()).get(key);
      if (state?.[3] === "1" || Date.now() > deadline) break;
      await sleep(20);
    }
    const expected = `${Array.from({ length: 300000 }, (_, i) => i + 1).join("\n")}\n`;
    assert.equal(state?.[1], "code:0");
    assert.equal(state?.[2], String(expected.length));
    assert.equal(a.read(key, "out").toString(), expected);
  });

  it("`quit` SIGKILLs every live group, reaps and exits 0", async (t) => {
    const a = await ownAgent(t);
    const c = await a.connect();
    const k1 = a.key();
    const leader = await a.start(c, k1, ["sh", "-c", "sleep 1000 & echo $!; wait"], { flags: "o" });
    const grandchild = Number((await firstLine(a, k1)).trim());
    const k2 = a.key();
    const other = await a.start(c, k2, ["sleep", "1000"]);
    c.send("quit");
    assert.equal(await a.exited, 0);
    assert.deepEqual(await waitGone([leader, grandchild, other]), []);
    assert.match(a.exitLine(k1), /^signal 9 \d+\n$/);
    assert.match(a.exitLine(k2), /^signal 9 \d+\n$/);
  });

  it("leads its own process group with -p", async (t) => {
    const a = await ownAgent(t, ["-p"]);
    assert.equal(Number(statOf(a.pid)?.[2]), a.pid);
    const plain = await ownAgent(t);
    assert.notEqual(Number(statOf(plain.pid)?.[2]), plain.pid);
  });

  it("with -d keeps CAP_SYS_PTRACE only for execs that ask with d", async (t) => {
    if (!isRoot) {
      console.log("skipped: capabilities need root");
      t.skip("needs root");
      return;
    }
    const a = await ownAgent(t, ["-d"]);
    const c = await a.connect();
    const PTRACE = 1n << 19n;
    const caps = async (flags: string) => {
      const r = await a.run(c, ["grep", "-E", "^Cap(Prm|Eff|Bnd)", "/proc/self/status"], { flags });
      assert.equal(r.exit, "code 0");
      const map = new Map<string, bigint>();
      for (const line of r.out.toString().trim().split("\n")) {
        const [name, hex] = line.split(":\t");
        map.set(name as string, BigInt(`0x${hex}`));
      }
      return map;
    };
    const without = await caps("o");
    assert.equal(without.size, 3);
    for (const [name, v] of without) assert.equal(v & PTRACE, 0n, `${name} without d`);
    const withD = await caps("od");
    for (const [name, v] of withD) assert.equal(v & PTRACE, PTRACE, `${name} with d`);
  });
});
