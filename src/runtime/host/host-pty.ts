import { readSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, resolve } from "node:path";
import { Readable, Writable } from "node:stream";
import { ReadStream } from "node:tty";
import { lookupProgram, notStartedProc } from "../program.ts";
import type { ExitStatus, Proc, SpawnSpec } from "../runtime.ts";

/**
 * The native half of node-pty (forkpty + resize). We use it directly because
 * node-pty's JS wrapper loses the tail of the output: libuv treats a POLLHUP
 * after a short read as end-of-file, while the kernel still holds terminal
 * output for the master side, and the wrapper also destroys the master 200 ms
 * after the exit whether or not it was read (node-pty issue #72).
 */
interface NativePty {
  fork(
    file: string,
    args: string[],
    env: string[],
    cwd: string,
    cols: number,
    rows: number,
    uid: number,
    gid: number,
    utf8: boolean,
    helperPath: string,
    onExit: (code: number, signal: number) => void,
  ): { fd: number; pid: number; pty: string };
  resize(fd: number, cols: number, rows: number): void;
}

const require = createRequire(import.meta.url);
let native: { pty: NativePty; helper: string } | undefined;

function loadNative(): { pty: NativePty; helper: string } {
  if (native) return native;
  const utilsPath = require.resolve("node-pty/lib/utils.js");
  const utils = require(utilsPath) as {
    loadNativeModule?: (name: string) => { dir: string; module: Partial<NativePty> };
  };
  if (typeof utils.loadNativeModule !== "function") {
    throw new Error("node-pty changed: lib/utils.js has no loadNativeModule");
  }
  const { dir, module } = utils.loadNativeModule("pty");
  if (typeof module.fork !== "function" || typeof module.resize !== "function") {
    throw new Error("node-pty changed: its native module has no fork/resize");
  }
  native = { pty: module as NativePty, helper: resolve(dirname(utilsPath), dir, "spawn-helper") };
  return native;
}

/** Reads of the master side in the drain phase (a terminal read returns at most 4 KiB). */
const DRAIN_CHUNK = 64 * 1024;
/** Longest pause between drain polls while a descendant still holds the terminal. */
const DRAIN_POLL_MAX_MS = 100;

/**
 * Starts `spec` on a new pseudo-terminal of `spec.pty` size, as the leader of
 * a new session and process group whose controlling terminal it is.
 *
 * The returned Proc: `stdout` is all terminal output (null when the spec
 * discards stdout; the terminal is still read so the program never blocks),
 * `stderr` is null, `stdin` writes to the terminal as bytes (its end() sends
 * nothing: a terminal has no end of input; Ctrl-D is the byte 0x04), and
 * `resize` sets the window size. `stdout` ends only once the master side
 * reports that no process holds the terminal any more (EIO) and every byte
 * before that was read, or when the reader destroys it (the exec's drain
 * grace for descendants that keep the terminal).
 */
export function spawnHostPty(spec: SpawnSpec): Proc {
  const size = spec.pty ?? { rows: 24, cols: 80 };
  const argv0 = spec.argv[0] ?? "";
  const found = lookupProgram(argv0, spec.env.PATH ?? "", spec.cwd);
  if (!("file" in found)) return notStartedProc(`${argv0}: ${found.reason}`, found.code);

  const { pty, helper } = loadNative();
  let resolveExit!: (s: ExitStatus) => void;
  const exited = new Promise<ExitStatus>((r) => {
    resolveExit = r;
  });
  const env = Object.entries(spec.env).map(([k, v]) => `${k}=${v}`);
  const term = pty.fork(
    argv0,
    spec.argv.slice(1),
    env,
    spec.cwd,
    size.cols,
    size.rows,
    -1,
    -1,
    true,
    helper,
    (code, signal) => resolveExit(signal ? { signal } : { code }),
  );
  const master = new MasterReader(term.fd);
  const out = master.output;
  if (spec.stdout === "ignore") out.resume();

  const stdin = new Writable({
    write(chunk: Buffer, _enc, cb) {
      master.write(chunk, cb);
    },
    final(cb) {
      cb(); // nothing to close: see above
    },
    destroy(_err, cb) {
      cb(null); // the exec dropping its stdin must not touch the terminal
    },
  });
  stdin.on("error", () => {});

  return {
    pid: term.pid,
    stdin,
    stdout: spec.stdout === "ignore" ? null : out,
    stderr: null,
    exited,
    startError: undefined,
    signalGroup(sig) {
      try {
        process.kill(-term.pid, sig);
      } catch {
        // ESRCH: the group is gone.
      }
    },
    resize(rows, cols) {
      if (master.closed) return;
      try {
        pty.resize(term.fd, cols, rows);
      } catch {
        // The terminal closed meanwhile.
      }
    },
  };
}

/**
 * Reads the master side of a terminal into `output` with backpressure.
 * While processes hold the terminal, libuv reads it; when libuv reports
 * end-of-file (a POLLHUP, which it may report before the kernel has handed
 * over the last bytes), the rest is read with plain reads until the kernel
 * answers EIO, which it does only after every byte was read.
 */
class MasterReader {
  readonly output: Readable;
  closed = false;
  private readonly socket: ReadStream;
  private draining = false;
  private drainWanted = false;
  private pollMs = 1;
  private poll: NodeJS.Timeout | undefined;

  constructor(private readonly fd: number) {
    this.socket = new ReadStream(fd);
    this.output = new Readable({
      highWaterMark: 64 * 1024,
      read: () => {
        if (this.draining) {
          if (this.drainWanted) {
            this.drainWanted = false;
            this.drain();
          }
        } else if (!this.closed) this.socket.resume();
      },
      destroy: (_err, cb) => {
        this.close();
        cb(null);
      },
    });
    this.socket.on("data", (chunk: Buffer) => {
      if (!this.output.push(chunk)) this.socket.pause();
    });
    this.socket.on("end", () => {
      this.draining = true;
      this.drain();
    });
    // EIO from libuv's own read: the kernel had no more bytes and no writer.
    this.socket.on("error", () => this.finish());
    this.socket.on("close", () => this.finish());
  }

  /** Writes to the terminal; the callback runs once written (or dropped: terminal gone). */
  write(chunk: Buffer, cb: () => void): void {
    if (this.closed || this.draining || this.socket.destroyed) cb();
    else this.socket.write(chunk, () => cb());
  }

  private drain(): void {
    const buf = Buffer.allocUnsafe(DRAIN_CHUNK);
    while (!this.closed) {
      let n: number;
      try {
        n = readSync(this.fd, buf, 0, buf.length, null);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "EAGAIN") {
          // A descendant still holds the terminal: poll (the exec's drain
          // grace decides when to give up on it).
          this.poll = setTimeout(() => this.drain(), this.pollMs);
          this.pollMs = Math.min(this.pollMs * 2, DRAIN_POLL_MAX_MS);
          return;
        }
        this.finish(); // EIO: every byte was read
        return;
      }
      if (n === 0) {
        this.finish();
        return;
      }
      this.pollMs = 1;
      if (!this.output.push(Buffer.from(buf.subarray(0, n)))) {
        this.drainWanted = true;
        return;
      }
    }
  }

  private finish(): void {
    if (this.closed) return;
    this.close();
    this.output.push(null);
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.poll);
    this.socket.destroy(); // closes the master fd
  }
}
