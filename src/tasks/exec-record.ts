import type { ExecRequest, PtyOptions } from "../exec/exec-request.ts";

/**
 * What a task keeps of an exec with its process (SpawnSpec.persist), so that
 * a router restarted on the same data dir serves it again: its id, the
 * request's fingerprint (a retried start with the same id joins it), the
 * request without its environment (env values, plaintext secrets among
 * them, are never written down: the fingerprint is a hash), the start time
 * and the timeout deadline.
 */
export interface ExecRecord {
  v: 1;
  execId: string;
  fingerprint: string;
  request: Omit<ExecRequest, "envSources">;
  startedAt: number;
  deadline: number | undefined;
}

export function encodeExecRecord(
  req: ExecRequest,
  fingerprint: string,
  startedAt: number,
  deadline: number | undefined,
): string {
  const { envSources: _env, ...request } = req;
  const rec: ExecRecord = { v: 1, execId: req.execId, fingerprint, request, startedAt, deadline };
  return JSON.stringify(rec);
}

const str = (v: unknown): v is string => typeof v === "string";
const obj = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);
const num = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

function ptyOf(v: unknown): PtyOptions | undefined | null {
  if (v === undefined || v === null) return undefined;
  if (!obj(v)) return null;
  const p = v;
  if (!num(p.rows) || !num(p.cols) || !str(p.term) || !str(p.colorterm)) return null;
  if (!str(p.termProgram) || typeof p.noTerminateOnIdleStdin !== "boolean") return null;
  return {
    rows: p.rows,
    cols: p.cols,
    term: p.term,
    colorterm: p.colorterm,
    termProgram: p.termProgram,
    noTerminateOnIdleStdin: p.noTerminateOnIdleStdin,
  };
}

/**
 * The record in `text` as an exec request (with no env sources), or
 * undefined when it is not a well-formed record: a record is only ever
 * written by a router, but it is read back as untrusted input (it lives in
 * the agent's exec directory, which a process of the task may rewrite):
 * any JSON value, `null` and arrays included, is checked, never trusted.
 */
export function decodeExecRecord(
  text: string,
):
  | { req: ExecRequest; fingerprint: string; startedAt: number; deadline: number | undefined }
  | undefined {
  let r: unknown;
  try {
    r = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!obj(r) || !obj(r.request)) return undefined;
  const q = r.request;
  const pty = ptyOf(q.pty);
  const ok =
    r.v === 1 &&
    str(r.execId) &&
    r.execId === q.execId &&
    str(r.fingerprint) &&
    num(r.startedAt) &&
    (r.deadline === undefined || num(r.deadline)) &&
    Array.isArray(q.argv) &&
    q.argv.every(str) &&
    (q.stdout === "pipe" || q.stdout === "devnull") &&
    (q.stderr === "pipe" || q.stderr === "devnull" || q.stderr === "stdout") &&
    (q.timeoutSecs === undefined || num(q.timeoutSecs)) &&
    (q.workdir === undefined || str(q.workdir)) &&
    str(q.containerId) &&
    typeof q.runtimeDebug === "boolean" &&
    pty !== null;
  if (!ok) return undefined;
  const req: ExecRequest = {
    execId: r.execId as string,
    argv: q.argv as string[],
    stdout: q.stdout as ExecRequest["stdout"],
    stderr: q.stderr as ExecRequest["stderr"],
    timeoutSecs: q.timeoutSecs as number | undefined,
    workdir: q.workdir as string | undefined,
    envSources: [],
    containerId: q.containerId as string,
    pty,
    runtimeDebug: q.runtimeDebug as boolean,
  };
  return {
    req,
    fingerprint: r.fingerprint as string,
    startedAt: r.startedAt as number,
    deadline: r.deadline as number | undefined,
  };
}
