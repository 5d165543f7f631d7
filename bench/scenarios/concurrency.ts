import { resolve } from "node:path";
import { performance } from "node:perf_hooks";
import type { BenchContext } from "../lib/context.ts";
import { check, type Section, type Table, target } from "../lib/report.ts";
import { progress } from "../lib/rounds.ts";
import { type RouterProc, startRouterProc } from "../lib/router.ts";
import { run } from "../lib/spawn.ts";
import { fmtBytes, fmtMs, median, percentile } from "../lib/stats.ts";

const BURST_CHILD = resolve(import.meta.dirname, "../lib/burst-child.ts");

const CMD = ["echo", "hello"];
const OUT = "hello\n";

interface Burst {
  elapsedMs: number;
  /** From the burst's start until each exec was started (ours: TaskExecStart returned; raw: 'spawn'). */
  start: number[];
  /** From the burst's start until each exec's exit and output were known. */
  done: number[];
  peakRss?: number;
  cpuMs?: number;
}

/** `n` execs issued at once through the router (one task per burst), each started, waited and read. */
async function oursBurst(r: RouterProc, n: number, tag: string): Promise<Burst> {
  const task = (await r.tasks.create(`bench-conc-${tag}`, { runtime: "host" })).taskId;
  const c = r.client;
  await r.resetPeak();
  const before = await r.stats();
  const start: number[] = [];
  const done: number[] = [];
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: n }, async () => {
      const id = await c.start(task, CMD, { stdout: "pipe", stderr: "pipe" });
      start.push(performance.now() - t0);
      const s = await c.wait(task, id);
      const parts: Buffer[] = [];
      for await (const b of c.read(task, id, "stdout")) parts.push(b);
      if (s.code !== 0 || Buffer.concat(parts).toString() !== OUT) {
        throw new Error(
          `concurrent exec: exit ${JSON.stringify(s)}, output ${Buffer.concat(parts)}`,
        );
      }
      done.push(performance.now() - t0);
    }),
  );
  const elapsedMs = performance.now() - t0;
  const after = await r.stats();
  await r.tasks.terminate(task);
  return { elapsedMs, start, done, peakRss: after.peakRssBytes, cpuMs: after.cpuMs - before.cpuMs };
}

/** `n` raw `child_process.spawn`s issued at once from a fresh small process (burst-child.ts). */
async function rawBurst(n: number): Promise<Burst> {
  const out = await run([process.execPath, "--import", "tsx", BURST_CHILD, String(n)]);
  return JSON.parse(out) as Burst;
}

function row(level: number, name: string, bursts: Burst[]): string[] {
  const start = bursts.flatMap((b) => b.start);
  const done = bursts.flatMap((b) => b.done);
  const rates = bursts.map((b) => (level * 1000) / b.elapsedMs);
  const rss = bursts.map((b) => b.peakRss ?? Number.NaN);
  const cpu = bursts.map((b) => b.cpuMs ?? Number.NaN);
  return [
    String(level),
    name,
    median(rates).toFixed(0),
    fmtMs(percentile(start, 50)),
    fmtMs(percentile(start, 99)),
    fmtMs(percentile(done, 50)),
    fmtMs(percentile(done, 99)),
    Number.isFinite(median(rss)) ? fmtBytes(Math.max(...rss)) : "–",
    Number.isFinite(median(cpu))
      ? `${fmtMs(median(cpu))} (${(median(cpu) / level).toFixed(2)} ms/exec)`
      : "–",
  ];
}

/**
 * Scenario 4: 100, 500 and 1,000 execs issued at once, each printing a line
 * and exiting, through a router subprocess (whose peak RSS and CPU time are
 * read from /proc) vs raw spawns from this process.
 */
export async function concurrency(ctx: BenchContext): Promise<Section> {
  const { levels, rounds } = ctx.config.concurrency;
  const r = await startRouterProc();
  try {
    progress("concurrency: warm-up");
    await oursBurst(r, 50, "warmup");
    await rawBurst(50);
    const table: Table = {
      header: [
        "concurrent",
        "variant",
        "execs/s",
        "start p50",
        "start p99",
        "done p50",
        "done p99",
        "router peak RSS",
        "router CPU",
      ],
      rows: [],
    };
    let p99At1000 = Number.NaN;
    let rateRatio = Number.NaN;
    let cpuPerExec = Number.NaN;
    for (const level of levels) {
      const ours: Burst[] = [];
      const raw: Burst[] = [];
      for (let i = 0; i < rounds; i++) {
        progress(`concurrency ${level}: round ${i + 1}/${rounds}`);
        // Alternate which goes first.
        if (i % 2 === 0) {
          ours.push(await oursBurst(r, level, `${level}-${i}`));
          raw.push(await rawBurst(level));
        } else {
          raw.push(await rawBurst(level));
          ours.push(await oursBurst(r, level, `${level}-${i}`));
        }
      }
      table.rows.push(row(level, "ours (host)", ours), row(level, "raw spawn", raw));
      if (level === 1000) {
        p99At1000 = percentile(
          ours.flatMap((b) => b.start),
          99,
        );
        const rate = (bs: Burst[]) => median(bs.map((b) => (level * 1000) / b.elapsedMs));
        rateRatio = rate(ours) / rate(raw);
        cpuPerExec = median(ours.map((b) => (b.cpuMs ?? Number.NaN) / level));
      }
    }
    progress("");
    return {
      title: "4. Concurrency",
      method: `N execs of \`echo hello\` issued at once (ours: start → wait → read stdout, one client connection; raw: spawn → close, from a fresh Node process). Start latency counts from the burst's start. ${rounds} round(s) per level, alternating; RSS and CPU are the router subprocess's (VmHWM reset before each burst; utime+stime).`,
      tables: [table],
      targets: [
        target(
          "1,000 concurrent: p99 start < 100 ms",
          fmtMs(p99At1000),
          check(p99At1000, (x) => x < 100),
        ),
        target(
          "1,000 concurrent: execs/s ≥ 0.9× raw spawn (issue 14)",
          `${rateRatio.toFixed(2)}×`,
          check(rateRatio, (x) => x >= 0.9),
        ),
        target(
          "1,000 concurrent: router CPU ≤ 1 ms per exec (issue 14)",
          `${cpuPerExec.toFixed(2)} ms`,
          check(cpuPerExec, (x) => x <= 1),
        ),
      ],
      notes: [
        "The raw baseline spawns from its own small Node process (no router), so it has no RSS/CPU column.",
      ],
    };
  } finally {
    progress("");
    await r.stop();
  }
}
