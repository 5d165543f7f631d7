import { spawn } from "node:child_process";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import type { RouterClient } from "../../src/client/client.ts";
import { cleanup } from "../lib/cleanup.ts";
import { type BenchContext, runcRuntimeMissing, short } from "../lib/context.ts";
import { oursExit } from "../lib/ours.ts";
import {
  cgroupPeersOf,
  childrenOf,
  cpuMsOf,
  cpuMsSince,
  peakRssOf,
  resetPeaks,
  treeOf,
} from "../lib/proctree.ts";
import { OURS } from "../lib/ratios.ts";
import { check, type Section, type Table, target } from "../lib/report.ts";
import { alternate, type Missing, type Variant, type VariantResult } from "../lib/rounds.ts";
import { type RouterProc, startRouterProc } from "../lib/router.ts";
import { runcPath } from "../lib/runc.ts";
import { run } from "../lib/spawn.ts";
import type { Ssh } from "../lib/sshd.ts";
import { fmtBytes, fmtMs, fmtRate, median, rate } from "../lib/stats.ts";

const TITLE = "2b. Stdout to two readers";
const SSH = "ssh (multiplexed)";
const GiB = 2 ** 30;
const RSS_LIMIT = 256 * 2 ** 20;
const ZERO = Buffer.alloc(2 ** 20);

/** One measurement: the serving side's cost of delivering one exec's output to both readers. */
interface Sample {
  wallMs: number;
  /** Router (ours) or sshd processes (ssh): peak RSS, VmHWM reset before. */
  peakRss: number;
  /** Router (ours) or sshd processes (ssh): utime+stime during the measurement. */
  cpuMs: number;
  /** The task's agent processes (ours only; NaN when they could not be found). */
  agentCpuMs: number;
}

/** The length of `c`; throws unless every byte is zero (what `head -c N /dev/zero` prints). */
function zeros(c: Buffer): number {
  for (let o = 0; o < c.length; o += ZERO.length) {
    const n = Math.min(ZERO.length, c.length - o);
    if (!c.subarray(o, o + n).equals(ZERO.subarray(0, n))) throw new Error("a non-zero byte");
  }
  return c.length;
}

function expectBytes(who: string, got: number, bytes: number): void {
  if (got !== bytes) throw new Error(`${who}: read ${got} bytes, expected ${bytes}`);
}

/** Reads the exec's stdout from offset 0 to its end, checking every byte. */
async function readAll(client: RouterClient, task: string, id: string, bytes: number, who: string) {
  let n = 0;
  for await (const c of client.read(task, id, "stdout", { offset: 0 })) n += zeros(c);
  expectBytes(who, n, bytes);
}

/**
 * The task's agent processes, found by pid relations: host, the router's
 * children (the agent is started by the router, in a session of its own);
 * runc, the members of the task container's cgroup (its init and the agent).
 */
async function agentPids(r: RouterProc, task: string, runtime: string): Promise<number[]> {
  if (runtime === "host") return childrenOf(r.pid);
  const state = join(r.dataDir, "runc", "state");
  const list = JSON.parse(
    await run([runcPath() ?? "runc", "--root", state, "list", "-f", "json"]),
  ) as { id: string; pid: number }[] | null;
  const c = (list ?? []).find((x) => x.id === task || x.id.endsWith(`-${task}`));
  return c ? cgroupPeersOf(c.pid) : [];
}

let seq = 0;

/** A fresh task of `runtime`; one exec of `cmd` read by both clients at once; the task is removed after. */
async function oursTwo(
  r: RouterProc,
  second: RouterClient,
  runtime: string,
  cmd: string[],
  bytes: number,
): Promise<Sample> {
  const task = (await r.tasks.create(`bench-2r-${runtime}-${++seq}`, { runtime })).taskId;
  try {
    // The first exec starts the task's agent: the measurement holds only the stream.
    await oursExit(r.client, task, ["true"]);
    const agent = await cpuMsOf(await agentPids(r, task, runtime));
    await r.resetPeak();
    const before = await r.stats();
    const t0 = performance.now();
    const id = await r.client.start(task, cmd, { stdout: "pipe", stderr: "pipe" });
    await Promise.all([
      readAll(r.client, task, id, bytes, "reader 1"),
      readAll(second, task, id, bytes, "reader 2"),
    ]);
    const s = await r.client.wait(task, id);
    if (s.code !== 0) throw new Error(`${cmd.join(" ")}: exit ${JSON.stringify(s)}`);
    const wallMs = performance.now() - t0;
    const after = await r.stats();
    const agentCpuMs = agent.size > 0 ? await cpuMsSince(agent) : Number.NaN;
    return { wallMs, peakRss: after.peakRssBytes, cpuMs: after.cpuMs - before.cpuMs, agentCpuMs };
  } finally {
    // A failed removal leaves the task to the router's stop, which terminates every task.
    await r.tasks.terminate(task).catch(() => {});
  }
}

/** `argv` run as our child, its stdout read to EOF and checked, exit 0 expected. */
async function sshRead(argv: string[], bytes: number, who: string): Promise<void> {
  const child = cleanup.child(
    spawn(argv[0] as string, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] }),
  );
  let n = 0;
  let err = "";
  let bad: unknown;
  child.stdout.on("data", (c: Buffer) => {
    try {
      n += zeros(c);
    } catch (e) {
      bad ??= e;
    }
  });
  child.stderr.on("data", (c: Buffer) => {
    err = (err + c.toString()).slice(-500);
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (c) => resolve(c));
  });
  if (bad) throw bad;
  if (code !== 0) throw new Error(`${who}: ssh exited ${code}: ${err.trim()}`);
  expectBytes(who, n, bytes);
}

/** Two `ssh host head …` at once over the master connection; sshd's processes measured. */
async function sshTwo(ssh: Ssh, cmd: string[], bytes: number): Promise<Sample> {
  // The sshd we started, the master connection's monitor and session process (the
  // commands they start later are not in this set: their CPU is the command's).
  const serving = await treeOf(ssh.sshdPid);
  await resetPeaks(serving);
  const before = await cpuMsOf(serving);
  const t0 = performance.now();
  const argv = ssh.argv(cmd.join(" "));
  await Promise.all([sshRead(argv, bytes, "ssh reader 1"), sshRead(argv, bytes, "ssh reader 2")]);
  const wallMs = performance.now() - t0;
  const cpuMs = await cpuMsSince(before);
  return { wallMs, peakRss: await peakRssOf(serving), cpuMs, agentCpuMs: Number.NaN };
}

/** A fresh router (runc runtime when this machine has it), so its RSS is this scenario's alone. */
async function startRouter(): Promise<{ r: RouterProc; runc: string | undefined }> {
  let missing = runcRuntimeMissing();
  if (!missing) {
    try {
      return { r: await startRouterProc({ runtime: "runc" }), runc: undefined };
    } catch (err) {
      missing = `serve --runtime runc failed: ${short(err)}`;
    }
  }
  return { r: await startRouterProc(), runc: missing };
}

/**
 * Scenario 2b (issue 13): one exec printing N bytes (`head -c N /dev/zero`)
 * read to its end by two TaskExecStdioRead streams at once, from offset 0,
 * on two client connections; the router's peak RSS and CPU per GiB
 * delivered, next to two `ssh host head …` at once and sshd's.
 */
export async function stdoutTwoReaders(ctx: BenchContext): Promise<Section> {
  const ssh = await ctx.ssh();
  const { bytes, rounds, warmup } = ctx.config.twoReaders;
  const cmd = ["head", "-c", String(bytes), "/dev/zero"];
  const { r, runc } = await startRouter();
  const second = r.connect();
  try {
    const samples = new Map<string, Sample[]>();
    const measured = (name: string, fn: () => Promise<Sample>): Variant => ({
      name,
      run: async () => {
        const s = await fn();
        samples.set(name, [...(samples.get(name) ?? []), s]);
        return s.wallMs;
      },
    });
    const variants: (Variant | Missing)[] = [
      measured("ours (host)", () => oursTwo(r, second, "host", cmd, bytes)),
      runc === undefined
        ? measured("ours (runc)", () => oursTwo(r, second, "runc", cmd, bytes))
        : { name: "ours (runc)", unavailable: runc },
      ssh.ok
        ? measured(SSH, () => sshTwo(ssh.value, cmd, bytes))
        : { name: SSH, unavailable: ssh.reason },
    ];
    const res = await alternate(variants, { rounds, warmup, label: "stdout, two readers" });
    // Each variant ran once a round: its first `warmup` samples are the warm-up's.
    const kept = (name: string) =>
      res.get(name)?.unavailable ? [] : (samples.get(name) ?? []).slice(warmup);
    return report(res, kept, bytes, { rounds, warmup });
  } finally {
    second.close();
    await r.stop();
  }
}

function report(
  res: Map<string, VariantResult>,
  kept: (name: string) => Sample[],
  bytes: number,
  opts: { rounds: number; warmup: number },
): Section {
  const gib = (2 * bytes) / GiB;
  const perGiB = (ms: number) => ms / 1000 / gib;
  const fmtS = (s: number) => (Number.isFinite(s) ? `${s.toFixed(2)} s` : "–");
  const cpu = (name: string) => median(kept(name).map((s) => perGiB(s.cpuMs)));
  const peak = (name: string) => {
    const xs = kept(name).map((s) => s.peakRss);
    return xs.length > 0 ? Math.max(...xs) : Number.NaN;
  };
  const table: Table = {
    header: [
      "variant",
      "wall time (median)",
      "per reader (median)",
      "server peak RSS (max)",
      "server CPU / GiB (median)",
      "task agent CPU / GiB (median)",
      "n",
    ],
    rows: [...res.values()].map((v) => {
      if (v.unavailable) return [v.name, `unavailable: ${v.unavailable}`, "", "", "", "", ""];
      const s = kept(v.name);
      const wall = median(s.map((x) => x.wallMs));
      return [
        v.name,
        fmtMs(wall),
        fmtRate(rate(bytes, wall)),
        Number.isFinite(peak(v.name)) ? fmtBytes(peak(v.name)) : "–",
        fmtS(cpu(v.name)),
        fmtS(median(s.map((x) => perGiB(x.agentCpuMs)))),
        String(s.length),
      ];
    }),
  };
  const streamed = bytes === GiB ? "" : ` (streamed ${fmtBytes(bytes)}: --quick)`;
  const sshCpu = cpu(SSH);
  const vsSsh = OURS.map(
    (n) =>
      `${n} ${fmtS(cpu(n))}${Number.isFinite(cpu(n) / sshCpu) ? ` (${(cpu(n) / sshCpu).toFixed(2)}× sshd's)` : ""}`,
  ).join(", ");
  return {
    title: TITLE,
    method: `One exec of \`head -c ${bytes} /dev/zero\` (${fmtBytes(bytes)}) on a fresh task of a fresh router, read to its end by two TaskExecStdioRead streams at once from offset 0, on two client connections (two RouterClients, two HTTP/2 connections, both in the bench process); each reader checks every byte; timed from TaskExecStart until both readers reached the end and the exec exited 0. ssh: two \`ssh host head -c ${bytes} /dev/zero\` at once over the bench's multiplexed connection, read and checked the same way. ${opts.warmup} warm-up + ${opts.rounds} round(s), alternating.`,
    tables: [table],
    targets: OURS.map((n) =>
      target(
        `${n}: router peak RSS < 256 MiB while streaming 1 GiB to two readers`,
        `${Number.isFinite(peak(n)) ? fmtBytes(peak(n)) : "–"}${streamed}`,
        check(peak(n), (x) => x < RSS_LIMIT),
      ),
    ),
    notes: [
      `CPU seconds per GiB delivered (a measurement, not a target: issue 13 sets no CPU goal): router: ${vsSsh}; sshd: ${fmtS(sshCpu)}.`,
      "Per GiB delivered = CPU time / (2 × the exec's output): both readers' bytes count. Server = the router process (utime+stime, VmHWM reset before each exec) or the sshd processes present before the two sessions (the sshd the bench started, the master connection's monitor and session process; peak RSS is the sum of their VmHWMs), not the commands they run. Per reader = the exec's output / wall time (the slower reader's rate).",
      "Task agent = the processes of the task's agent found by pid before the exec (host: the router's children; runc: the container's cgroup, init included) after a first `true` exec started it; it splices the command's pipe into the output file, work that sshd's count includes (it reads the command's pipe itself).",
    ],
  };
}
