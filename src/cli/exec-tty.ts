import { spawnSync } from "node:child_process";
import { once } from "node:events";
import type { Writable } from "node:stream";
import type { RouterClient, StartOptions } from "../client/client.ts";
import { ExecsClient } from "../client/execs.ts";

/** Empty stdin writes this often tell the router the session's client is still there. */
const KEEPALIVE_MS = 30_000;

/** Signals that end the CLI (after restoring the terminal) while a session runs. */
const FATAL_SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

export interface TtyOptions {
  /** Forward local stdin (in raw mode) to the terminal: `-i`. */
  interactive: boolean;
  /** Start options other than the streams and the terminal. */
  start: Omit<StartOptions, "pty" | "stdout" | "stderr">;
}

/**
 * `exec -t [-i] TASK -- CMD`: runs CMD on a remote pseudo-terminal like
 * `docker exec -it`. The local terminal is put in raw mode (with -i) so every
 * key, Ctrl-C included, reaches the remote program as a byte; it is restored
 * on every way out (normal end, error, SIGHUP/SIGINT/SIGTERM, process exit).
 * The window size is sent at start and on every SIGWINCH. Resolves with the
 * remote exit code (128 + signal for a signal).
 */
export async function execTty(
  client: RouterClient,
  task: string,
  argv: string[],
  o: TtyOptions,
): Promise<number> {
  const stdin = process.stdin;
  if (!stdin.isTTY) {
    throw new Error("the input device is not a TTY: -t needs a terminal on stdin (drop -t)");
  }
  const size = () => {
    const out = process.stdout.isTTY
      ? process.stdout
      : process.stderr.isTTY
        ? process.stderr
        : null;
    return { rows: out?.rows ?? 0, cols: out?.columns ?? 0 };
  };
  const env = process.env;
  const first = size();
  const execId = await client.start(task, argv, {
    ...o.start,
    stdout: "pipe",
    stderr: "pipe",
    pty: {
      ...first,
      ...(env.TERM ? { term: env.TERM } : {}),
      ...(env.COLORTERM ? { colorterm: env.COLORTERM } : {}),
      ...(env.TERM_PROGRAM ? { termProgram: env.TERM_PROGRAM } : {}),
    },
  });

  const execs = new ExecsClient(client);
  // Handlers first: a signal that lands while the mode is being changed (the
  // `stty -opost` child) is then handled after it, so the restore comes last.
  let restore = () => {};
  const onSignal = (sig: NodeJS.Signals) => {
    restore();
    process.exit(128 + (FATAL_SIGNALS[sig] ?? 0));
  };
  for (const sig of Object.keys(FATAL_SIGNALS)) process.on(sig, onSignal);
  const restoreOnExit = () => restore();
  process.on("exit", restoreOnExit);
  restore = rawMode(o.interactive);

  // Stdin writes, keepalives and resizes each run in order on their own chain.
  let offset = 0;
  let writes: Promise<void> = Promise.resolve();
  const write = (data: Uint8Array) => {
    writes = writes.then(async () => {
      await client.writeStdin(task, execId, offset, data);
      offset += data.length;
    });
    return writes;
  };
  const keepalive = setInterval(() => void write(new Uint8Array()).catch(() => {}), KEEPALIVE_MS);
  let sent = first;
  let resizes: Promise<void> = Promise.resolve();
  const onResize = () => {
    const now = size();
    if (now.rows === 0 || now.cols === 0 || (now.rows === sent.rows && now.cols === sent.cols)) {
      return;
    }
    sent = now;
    // A failed resize must not end the session; the next SIGWINCH retries.
    resizes = resizes.then(() => execs.resize(task, execId, now.rows, now.cols).catch(() => {}));
  };
  process.on("SIGWINCH", onResize);
  onResize(); // the window may have changed while the exec started

  const forward = async () => {
    for await (const chunk of stdin as AsyncIterable<Buffer>) await write(chunk);
  };
  const input = o.interactive ? forward() : Promise.resolve();
  try {
    const [status] = await Promise.all([
      client.wait(task, execId),
      copyOutput(client, task, execId, "stdout", process.stdout),
    ]);
    return exitCodeOf(status);
  } finally {
    clearInterval(keepalive);
    process.off("SIGWINCH", onResize);
    restore();
    for (const sig of Object.keys(FATAL_SIGNALS)) process.off(sig, onSignal);
    process.off("exit", restoreOnExit);
    stdin.destroy();
    await input.catch(() => {});
  }
}

/**
 * Puts the local terminal in raw mode (when `on`) as `docker exec -it` does:
 * Node's raw mode keeps output processing (a "\n" becomes "\r\n"), which the
 * remote terminal already did, so `stty -opost` turns that off too. Returns an
 * idempotent restore (Node restores the whole saved mode, OPOST included).
 */
function rawMode(on: boolean): () => void {
  const stdin = process.stdin;
  if (!on || !stdin.isTTY) return () => {};
  stdin.setRawMode(true);
  spawnSync("stty", ["-opost"], { stdio: ["inherit", "ignore", "ignore"] });
  let restored = false;
  return () => {
    if (restored) return;
    restored = true;
    try {
      stdin.setRawMode(false);
    } catch {
      // stdin is already gone; the kernel keeps the terminal's mode, Node restores it at exit.
    }
  };
}

/** Copies an exec's output stream to `out` until it ends, honouring `out`'s backpressure. */
export async function copyOutput(
  client: RouterClient,
  task: string,
  execId: string,
  stream: "stdout" | "stderr",
  out: Writable,
): Promise<void> {
  for await (const chunk of client.read(task, execId, stream)) {
    if (!out.write(chunk)) await once(out, "drain");
  }
}

/** The CLI's exit code for an exec's status: its code, or 128 + the signal that ended it. */
export function exitCodeOf(status: { code?: number; signal?: number }): number {
  return status.signal !== undefined ? 128 + status.signal : (status.code ?? 0);
}
