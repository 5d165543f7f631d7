import type { BenchContext } from "../lib/context.ts";
import { oursRead } from "../lib/ours.ts";
import { versusTargets } from "../lib/ratios.ts";
import { check, type Section, target } from "../lib/report.ts";
import { alternate } from "../lib/rounds.ts";
import { timeRead } from "../lib/spawn.ts";
import { fmtBytes, fmtRate } from "../lib/stats.ts";
import { medianOf, throughputTable } from "../lib/tables.ts";

const RAW = "raw pipe";
const SSH = "ssh (multiplexed)";

/**
 * Scenario 2: `head -c N /dev/zero` read to EOF by a client: ours (start →
 * TaskExecStdioRead to the end → exit 0) vs Node reading a child's stdout
 * pipe, and `ssh host head …` read the same way.
 */
export async function stdoutThroughput(ctx: BenchContext): Promise<Section> {
  const ssh = await ctx.ssh();
  const { bytes, rounds, warmup } = ctx.config.stdout;
  const cmd = ["head", "-c", String(bytes), "/dev/zero"];
  const res = await alternate(
    [
      ...(await ctx.ours((c, task) => oursRead(c, task, cmd, bytes))),
      { name: RAW, run: () => timeRead(cmd, bytes) },
      ssh.ok
        ? { name: SSH, run: () => timeRead(ssh.value.argv(cmd.join(" ")), bytes) }
        : { name: SSH, unavailable: ssh.reason },
    ],
    { rounds, warmup, label: "stdout throughput" },
  );
  const ours = (bytes * 1000) / medianOf(res, "ours (host)");
  return {
    title: "2. Stdout throughput",
    method: `${fmtBytes(bytes)} from \`head -c ${bytes} /dev/zero\`, read to EOF by the client, timed from start to exit. ${warmup} warm-up + ${rounds} rounds, alternating.`,
    tables: [throughputTable(res, bytes, [RAW, SSH])],
    targets: [
      target(
        "ours (host) ≥ 1 GB/s",
        fmtRate(ours),
        check(ours, (x) => x >= 1e9),
      ),
      // Issue 13: from this same run, host and runc alike.
      ...versusTargets(res, bytes, { name: RAW, label: "a raw pipe" }, 0.5, "percent"),
      ...versusTargets(res, bytes, { name: SSH, label: "ssh" }, 1.25, "ratio"),
    ],
    notes: [
      "The router keeps every byte (the task agent's output file; a memory log with spill files for an exec without an agent) and serves readers from it; the raw pipe keeps nothing.",
    ],
  };
}
