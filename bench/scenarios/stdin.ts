import type { BenchContext } from "../lib/context.ts";
import { oursWrite } from "../lib/ours.ts";
import { versusTargets } from "../lib/ratios.ts";
import { check, type Section, target } from "../lib/report.ts";
import { alternate } from "../lib/rounds.ts";
import { timeWrite } from "../lib/spawn.ts";
import { fmtBytes, fmtRate } from "../lib/stats.ts";
import { medianOf, throughputTable } from "../lib/tables.ts";

const RAW = "raw pipe";
const SSH = "ssh (multiplexed)";

/**
 * Scenario 3: N bytes into `cat` (stdout to /dev/null) in 16 MiB writes, as
 * the upstream SDK writes: ours (TaskExecStdinWrite by offset, EOF on the last)
 * vs Node writing a child's stdin pipe, and `ssh host 'cat >/dev/null'`.
 */
export async function stdinThroughput(ctx: BenchContext): Promise<Section> {
  const ssh = await ctx.ssh();
  const { bytes, chunk: chunkSize, rounds, warmup } = ctx.config.stdin;
  const chunk = Buffer.alloc(chunkSize, "x");
  const cmd = ["cat"];
  const res = await alternate(
    [
      ...(await ctx.ours((c, task) => oursWrite(c, task, cmd, bytes, chunk))),
      { name: RAW, run: () => timeWrite(cmd, bytes, chunk) },
      ssh.ok
        ? { name: SSH, run: () => timeWrite(ssh.value.argv("cat >/dev/null"), bytes, chunk) }
        : { name: SSH, unavailable: ssh.reason },
    ],
    { rounds, warmup, label: "stdin throughput" },
  );
  const ours = (bytes * 1000) / medianOf(res, "ours (host)");
  return {
    title: "3. Stdin throughput",
    method: `${fmtBytes(bytes)} into \`cat\` (stdout discarded) in ${fmtBytes(chunkSize)} writes, each awaited, then EOF; timed from start to exit. ${warmup} warm-up + ${rounds} rounds, alternating.`,
    tables: [throughputTable(res, bytes, [RAW, SSH])],
    targets: [
      target(
        "ours (host) ≥ 500 MB/s",
        fmtRate(ours),
        check(ours, (x) => x >= 500e6),
      ),
      // Issue 13: from this same run, host and runc alike.
      ...versusTargets(res, bytes, { name: SSH, label: "ssh" }, 1.25, "ratio"),
    ],
    notes: [],
  };
}
