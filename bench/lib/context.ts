import { join } from "node:path";
import type { RouterClient } from "../../src/client/client.ts";
import type { Missing, Variant } from "./rounds.ts";
import { type RouterProc, serveUsage, startRouterProc } from "./router.ts";
import { type BareRunc, runcPath, startBareRunc } from "./runc.ts";
import { type Availability, type Ssh, startSsh } from "./sshd.ts";

export interface BenchConfig {
  quick: boolean;
  /** Install openssh-server when missing (root + apt-get). */
  install: boolean;
  exec: { rounds: number; warmup: number };
  stdout: { bytes: number; rounds: number; warmup: number };
  /** One exec's stdout read by two readers at once (issue 13). */
  twoReaders: { bytes: number; rounds: number; warmup: number };
  stdin: { bytes: number; chunk: number; rounds: number; warmup: number };
  concurrency: { levels: number[]; rounds: number };
  images: { files: number; bytes: number; rounds: number };
}

const GiB = 2 ** 30;
const MiB = 2 ** 20;

export function benchConfig(quick: boolean, install: boolean, rounds?: number): BenchConfig {
  const r = (full: number, q: number) => rounds ?? (quick ? q : full);
  return {
    quick,
    install,
    exec: { rounds: r(40, 10), warmup: quick ? 2 : 3 },
    stdout: { bytes: quick ? 512 * MiB : GiB, rounds: r(5, 2), warmup: 1 },
    twoReaders: { bytes: quick ? 512 * MiB : GiB, rounds: r(3, 1), warmup: 1 },
    stdin: { bytes: 256 * MiB, chunk: 16 * MiB, rounds: r(5, 2), warmup: 1 },
    concurrency: { levels: quick ? [100, 1000] : [100, 500, 1000], rounds: r(2, 1) },
    images: quick
      ? { files: 2000, bytes: 200 * MiB, rounds: r(3, 1) }
      : { files: 10_000, bytes: GiB, rounds: r(3, 1) },
  };
}

/** The router shared by the exec, stdout, stdin and images scenarios, with a task per runtime. */
export interface SharedRouter {
  proc: RouterProc;
  hostTask: string;
  /** A task on the runc runtime, when this checkout and machine have one. */
  runcTask: Availability<string>;
}

/** What scenarios share; everything is started on first use and cleaned up by `cleanup`. */
export class BenchContext {
  private routerP: Promise<Availability<SharedRouter>> | undefined;
  private sshP: Promise<Availability<Ssh>> | undefined;
  private runcP: Promise<Availability<BareRunc>> | undefined;

  constructor(
    readonly config: BenchConfig,
    /** The bench's temp dir (removed at cleanup). */
    readonly tmp: string,
  ) {}

  get sshStarted(): boolean {
    return this.sshP !== undefined;
  }

  get runcStarted(): boolean {
    return this.runcP !== undefined;
  }

  /** The shared router subprocess, or why it could not start. */
  router(): Promise<Availability<SharedRouter>> {
    this.routerP ??= startShared().then(
      (value) => ({ ok: true as const, value }),
      (err: unknown) => ({ ok: false as const, reason: `router: ${short(err)}` }),
    );
    return this.routerP;
  }

  /**
   * The "ours (host)" and "ours (runc)" variants running `fn` on the shared
   * router's task of that runtime, or marked unavailable with the reason.
   */
  async ours(
    fn: (client: RouterClient, task: string) => Promise<number>,
  ): Promise<(Variant | Missing)[]> {
    const r = await this.router();
    if (!r.ok) {
      return [
        { name: "ours (host)", unavailable: r.reason },
        { name: "ours (runc)", unavailable: r.reason },
      ];
    }
    const { proc, hostTask, runcTask } = r.value;
    return [
      { name: "ours (host)", run: () => fn(proc.client, hostTask) },
      runcTask.ok
        ? { name: "ours (runc)", run: () => fn(proc.client, runcTask.value) }
        : { name: "ours (runc)", unavailable: runcTask.reason },
    ];
  }

  ssh(): Promise<Availability<Ssh>> {
    this.sshP ??= startSsh(join(this.tmp, "ssh"), this.config.install).catch((err: unknown) => ({
      ok: false as const,
      reason: `sshd failed: ${short(err)}`,
    }));
    return this.sshP;
  }

  bareRunc(): Promise<Availability<BareRunc>> {
    this.runcP ??= startBareRunc(join(this.tmp, "runc")).catch((err: unknown) => ({
      ok: false as const,
      reason: `runc container failed: ${short(err)}`,
    }));
    return this.runcP;
  }
}

/** Why the router's runc runtime cannot be used here, or undefined when it can be tried. */
export function runcRuntimeMissing(): string | undefined {
  if (!/--runtime\b/.test(serveUsage())) return "serve has no --runtime option yet (issue 4)";
  if (!runcPath()) return "runc not installed";
  if (process.getuid?.() !== 0) return "the runc runtime needs root";
  return undefined;
}

async function startShared(): Promise<SharedRouter> {
  let missing = runcRuntimeMissing();
  let proc: RouterProc | undefined;
  if (!missing) {
    try {
      proc = await startRouterProc({ runtime: "runc" });
    } catch (err) {
      missing = `serve --runtime runc failed: ${short(err)}`;
    }
  }
  proc ??= await startRouterProc();
  const hostTask = (await proc.tasks.create("bench-host", { runtime: "host" })).taskId;
  let runcTask: Availability<string> = { ok: false, reason: missing ?? "" };
  if (!missing) {
    try {
      const id = (await proc.tasks.create("bench-runc", { runtime: "runc" })).taskId;
      runcTask = { ok: true, value: id };
    } catch (err) {
      runcTask = { ok: false, reason: `runc task create failed: ${short(err)}` };
    }
  }
  return { proc, hostTask, runcTask };
}

/** An error's message on one line, cut to `max` characters (for table cells). */
export function short(err: unknown, max = 300): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.replace(/\s+/g, " ").trim().slice(0, max);
}
