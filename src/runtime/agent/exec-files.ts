import { ResourceExhaustedError } from "../../errors.ts";
import type { ExitStatus, SpawnSpec } from "../runtime.ts";
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
