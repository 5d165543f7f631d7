import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { closeSync, constants as fsc, openSync } from "node:fs";
import { Socket } from "node:net";
import { constants } from "node:os";
import type { Readable, Writable } from "node:stream";
import type { ExitStatus } from "./runtime.ts";

/** "ENOENT" for 2, the number otherwise. */
function errnoText(n: number): string {
  const name = Object.entries(constants.errno).find(([, v]) => v === n)?.[0];
  return name ?? `errno ${n}`;
}

/** What `Spawner.spawn` starts: pipes as asked, the exit once it is known. */
export interface Spawned {
  pid: number;
  stdin: Writable;
  stdout: Readable | null;
  stderr: Readable | null;
  /** The exit status and the bytes the process wrote to fd 3 (empty without `report`). */
  exited: Promise<{ status: ExitStatus; report: string }>;
}

export interface SpawnOptions {
  cwd: string;
  stdout: "pipe" | "ignore";
  /** "stdout": fd 2 is the stdout pipe too (one pipe, the bytes in write order). */
  stderr: "pipe" | "ignore" | "stdout";
  /** fd 3 is a pipe; what the process writes there comes back with its exit (≤ 63 bytes). */
  report?: boolean;
  /** The process's complete environment; absent: the helper's own (`Spawner.start`). */
  env?: Record<string, string>;
  /** argv[0] of the process; absent: `program`. */
  argv0?: string;
}

/** The spawner's largest request (native/spawner.c MAX_FRAME). */
const MAX_FRAME = 4 << 20;

/** A process the helper could not start: `code` is the errno's name ("ENOENT"). */
export class SpawnFailed extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

type Started = { pid: number; fds: number[] } | Error;
type Exit = { status: ExitStatus; report: string };

interface Job {
  onStart: (r: Started) => void;
  onExit: (r: Exit) => void;
}

/**
 * Starts processes through native/spawner.c, a small helper that is this
 * router's child for its whole life: a fork of the router itself copies the
 * page tables of its heap and blocks the event loop until the child has
 * exec'd (~7 ms here), the helper's vfork takes ~1 ms.
 *
 * Contract:
 * - `spawn` resolves once the process runs, with its pipes open in this
 *   process. It rejects (nothing runs) with `SpawnFailed` when the program
 *   cannot be started (exec or cwd failed; a file without `#!` runs under
 *   /bin/sh, as execvp does), with another Error when the helper is gone or
 *   the request exceeds its 4 MiB. `program` is a path: no PATH search.
 * - each process leads a session of its own (like `detached: true`), with
 *   default signal dispositions, and is not killed when the router exits.
 * - `exited` never rejects: if the helper dies first, the processes it
 *   started can no longer be waited for and resolve as SIGKILLed (they
 *   become init's children and run on).
 * - `close` ends the helper (processes it started keep running).
 */
export class Spawner {
  private readonly jobs = new Map<string, Job>();
  private seq = 0;
  private lines = "";
  private gone: Error | undefined;

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (s: string) => this.onData(s));
    child.stdin.on("error", () => {}); // EPIPE when it died: reported through "exit"
    child.on("error", (err) => this.fail(err));
    // "close": after the last event on stdout was read (an "exit" may still be in the pipe at "exit").
    child.on("close", (code, signal) =>
      this.fail(new Error(`taskrouter-spawner exited (${signal ?? code})`)),
    );
    // It keeps the event loop alive only while a process of its runs (see `hold`).
    child.unref();
    (child.stdin as unknown as Socket).unref();
    (child.stderr as Socket).unref();
    this.hold();
  }

  /** Keeps the event loop alive while jobs are pending (their exit comes on stdout). */
  private hold(): void {
    const out = this.child.stdout as Socket;
    if (this.jobs.size > 0) {
      out.ref();
      this.child.ref(); // its death must be seen too
    } else {
      out.unref();
      this.child.unref();
    }
  }

  /** Starts the helper at `path` (its env is the env of every process it starts). */
  static start(path: string, env: Record<string, string>): Spawner {
    const child = spawn(path, [], { env, cwd: "/", detached: true, stdio: "pipe" });
    child.stderr.pipe(process.stderr, { end: false });
    return new Spawner(child);
  }

  /** The helper's pid. */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** False once the helper is gone (a new one is needed). */
  get alive(): boolean {
    return this.gone === undefined;
  }

  async spawn(program: string, args: string[], opts: SpawnOptions): Promise<Spawned> {
    if (this.gone) throw this.gone;
    const flags = [
      opts.stdout === "pipe" ? "o" : "",
      opts.stderr === "pipe" ? "e" : opts.stderr === "stdout" ? "m" : "",
      opts.report ? "r" : "",
      opts.env ? "v" : "",
      opts.argv0 !== undefined ? "a" : "",
    ].join("");
    const env = opts.env ? Object.entries(opts.env).map(([k, v]) => `${k}=${v}`) : [];
    const id = String(++this.seq);
    const fields = [
      "spawn",
      id,
      flags || "-",
      opts.cwd,
      ...(opts.env ? [String(env.length), ...env] : []),
      program,
      ...(opts.argv0 !== undefined ? [opts.argv0] : []),
      ...args,
    ];
    // A NUL would split a field (argv and inline env are checked, but a secret could hold one).
    if (fields.some((f) => f.includes("\0"))) throw new Error("a NUL byte in a spawner request");
    const frame = this.frame(fields);
    if (frame.length > MAX_FRAME + 4) throw new Error("request too large for the spawner");
    let onExit: (r: Exit) => void = () => {};
    const exited = new Promise<Exit>((r) => {
      onExit = r;
    });
    const started = new Promise<Started>((onStart) => this.jobs.set(id, { onStart, onExit }));
    this.hold();
    this.child.stdin.write(frame);
    const s = await started;
    if (s instanceof Error) {
      this.jobs.delete(id);
      this.hold();
      throw s;
    }
    return { pid: s.pid, ...this.open(id, s.pid, s.fds), exited };
  }

  /**
   * Opens our side of the pipes (the helper keeps them until `release`). If
   * one cannot be opened, the process is killed (it could never be fed or
   * read) and the error thrown.
   */
  private open(id: string, pid: number, fds: number[]) {
    const opened: Socket[] = [];
    const at = (i: number, flags: number): Socket | null => {
      const n = fds[i] ?? -1;
      if (n < 0) return null;
      const fd = openSync(`/proc/${this.child.pid}/fd/${n}`, flags | fsc.O_NONBLOCK);
      try {
        const s = new Socket({
          fd,
          readable: flags === fsc.O_RDONLY,
          writable: flags === fsc.O_WRONLY,
        });
        opened.push(s);
        return s;
      } catch (err) {
        closeSync(fd);
        throw err;
      }
    };
    try {
      const stdin = at(0, fsc.O_WRONLY) as Socket;
      // A process that closed its stdin makes writes fail with EPIPE: expected.
      stdin.on("error", () => {});
      return { stdin, stdout: at(1, fsc.O_RDONLY), stderr: at(2, fsc.O_RDONLY) };
    } catch (err) {
      for (const s of opened) s.destroy();
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        // gone already
      }
      throw err;
    } finally {
      this.send(["release", id]);
    }
  }

  /** A request: its length (4 bytes, little-endian), then its fields, each NUL-terminated. */
  private frame(fields: string[]): Buffer {
    const text = `${fields.join("\0")}\0`;
    const len = Buffer.byteLength(text);
    const buf = Buffer.allocUnsafe(4 + len);
    buf.writeUInt32LE(len, 0);
    buf.write(text, 4);
    return buf;
  }

  private send(fields: string[]): void {
    this.child.stdin.write(this.frame(fields));
  }

  private onData(s: string): void {
    this.lines += s;
    let nl = this.lines.indexOf("\n");
    while (nl >= 0) {
      this.onLine(this.lines.slice(0, nl));
      this.lines = this.lines.slice(nl + 1);
      nl = this.lines.indexOf("\n");
    }
  }

  private onLine(line: string): void {
    const [kind, id = "", a, b, c, d] = line.split(" ");
    const job = this.jobs.get(id);
    if (!job) return;
    if (kind === "started") {
      job.onStart({ pid: Number(a), fds: [Number(b), Number(c), Number(d)] });
    } else if (kind === "failed") {
      job.onStart(new SpawnFailed(errnoText(Number(a))));
    } else if (kind === "exit") {
      this.jobs.delete(id);
      this.hold();
      const n = Number(b);
      job.onExit({
        status: a === "signal" ? { signal: n } : { code: n },
        report: Buffer.from(c ?? "", "hex").toString(),
      });
    }
  }

  private fail(err: Error): void {
    if (this.gone) return;
    this.gone = err;
    for (const job of this.jobs.values()) {
      job.onStart(err);
      job.onExit({ status: { signal: 9 }, report: "" });
    }
    this.jobs.clear();
  }

  /** Ends the helper; processes it started keep running. */
  close(): void {
    this.child.stdin.end();
  }
}

/**
 * One spawner started on first use and replaced when it died; `close` ends
 * the current one.
 */
export function lazySpawner(path: string, env: Record<string, string>) {
  let current: Spawner | undefined;
  return {
    get(): Spawner {
      if (!current?.alive) current = Spawner.start(path, env);
      return current;
    },
    close(): void {
      current?.close();
      current = undefined;
    },
  };
}
