import { ResourceExhaustedError } from "../../errors.ts";
import type { ExitStatus, SpawnSpec } from "../runtime.ts";
import { type AgentConn, connectionClosed } from "./agent-conn.ts";
import { ExecDirFileError, readBounded } from "./exec-dir-files.ts";

/** Errnos behind an agent's `error` that mean "out of a resource", not a bug. */
const EXHAUSTED = /\b(EAGAIN|ENOMEM|EMFILE|ENFILE|ENOSPC|EDQUOT)\b/;

/** The fields of the agent's `exec` request for `spec` (native/task-agent.c, "Requests"). */
export function execFields(key: string, spec: SpawnSpec, debug: boolean, ring: boolean): string[] {
  const pty = spec.pty;
  const flags =
    (spec.stdout === "pipe" ? "o" : "") +
    (spec.stderr === "pipe" && !pty ? "e" : "") +
    (spec.stderr === "stdout" && !pty ? "m" : "") +
    (pty ? "t" : "") +
    (spec.runtimeDebug && debug ? "d" : "") +
    (spec.retain ? "r" : "") +
    (ring ? "i" : "");
  const env = Object.entries(spec.env).map(([k, v]) => `${k}=${v}`);
  return [
    "exec",
    key,
    flags || "-",
    // With `r` the CAP field is the retention per stream.
    String(spec.retain ? spec.retain : (spec.outputCap ?? 0)),
    String(spec.drainGraceMs ?? 0),
    String(spec.deadline ?? 0),
    String(pty?.rows ?? 0),
    String(pty?.cols ?? 0),
    spec.cwd,
    String(env.length),
    ...env,
    ...spec.argv,
  ];
}

/** The error for an agent's `error KEY TEXT` answer to `exec`. */
export function refusal(text: string): Error {
  return EXHAUSTED.test(text)
    ? new ResourceExhaustedError(`the task agent cannot start the command: ${text}`)
    : new Error(`task agent: exec refused: ${text}`);
}

/** What `requestStart` reports, each synchronously as it happens. */
export interface StartHooks {
  /** The request is about to go out (a throw of `send` is reported by `answered`, as if refused). */
  sending(): void;
  /** The agent answered, or nothing went out. */
  answered(): void;
  /** `started KEY PID`: route the exec's next events now (they may follow in the same read). */
  started(pid: number): void;
}

/**
 * Sends the `exec` request `fields` for `key` on `conn` and waits for the
 * agent's answer: resolves on `started`; rejects with `refusal` on `error`,
 * or with connectionClosed() when the connection ends first (after
 * `sending` the agent may have started it: the caller must find out).
 */
export function requestStart(
  conn: AgentConn,
  key: string,
  fields: string[],
  hooks: StartHooks,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (conn.isClosed) return reject(connectionClosed());
    // Heeds the close only until answered: nothing of the exec (its spec and env) stays held.
    let off = () => {};
    conn.on(key, (e) => {
      if (e.kind !== "started" && e.kind !== "error") return;
      off();
      hooks.answered();
      if (e.kind === "error") return reject(refusal(e.args[0] ?? ""));
      hooks.started(Number(e.args[0]));
      resolve();
    });
    hooks.sending();
    try {
      conn.send(fields);
    } catch (err) {
      hooks.answered(); // nothing went out
      throw err;
    }
    off = conn.onClose(reject);
  });
}

/** How an exec ended, as the agent's `exits` file records it. */
export interface RecordedExit {
  status: ExitStatus;
  /** CLOCK_REALTIME ms of the reap. */
  at: number;
}

/**
 * The most of `exits` read (ExecDirFileError past it). The agent rewrites it
 * once forgotten execs' lines are most of it (at least 1,024 lines of < 128
 * bytes), so a real one holds about two lines per exec kept: 10,000 execs,
 * ~2.6 MB.
 */
export const MAX_EXITS_BYTES = 32 * 1024 * 1024;

const EXIT_LINE = /^([0-9a-z]{1,64}) (code|signal) (\d{1,3}) (\d{1,16})$/;

/**
 * The agent's `exits` file (`KEY code N MS` / `KEY signal N MS` lines; a torn
 * last line is ignored; the last line of a KEY wins), empty when absent.
 * @throws ExecDirFileError when it is not a regular file or is larger than MAX_EXITS_BYTES
 */
export function exitsFile(path: string): Map<string, RecordedExit> {
  const exits = new Map<string, RecordedExit>();
  const text = readBounded(path, MAX_EXITS_BYTES)?.toString("latin1");
  if (text === undefined) return exits;
  const lines = text.split("\n");
  lines.pop(); // after the last newline: "" or a torn line
  for (const line of lines) {
    const m = EXIT_LINE.exec(line);
    if (!m) continue;
    const n = Number(m[3]);
    exits.set(m[1] as string, {
      status: m[2] === "signal" ? { signal: n } : { code: n },
      at: Number(m[4]),
    });
  }
  return exits;
}

/**
 * exitsFile, empty when `exits` is not a regular file or too large (a
 * process of the task replaced it): the execs of a lost agent then end as
 * SIGKILLed, as when it recorded nothing.
 */
export function readExits(path: string): Map<string, RecordedExit> {
  try {
    return exitsFile(path);
  } catch (err) {
    if (err instanceof ExecDirFileError) return new Map();
    throw err;
  }
}
