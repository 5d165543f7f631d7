import type { RouterClient } from "../../src/client/client.ts";
import type { BenchContext } from "../lib/context.ts";
import { oursExit, oursFirstByte } from "../lib/ours.ts";
import { check, type Section, target } from "../lib/report.ts";
import { alternate, type Missing, type Variant } from "../lib/rounds.ts";
import { timeExit, timeFirstByte } from "../lib/spawn.ts";
import { fmtRatio } from "../lib/stats.ts";
import { latencyTable, medianOf } from "../lib/tables.ts";

const RAW = "raw spawn";
const SSH = "ssh (multiplexed)";
const RUNC = "runc exec";

/**
 * Scenario 1: exec round trip (`true`: start → exit status) and first byte
 * (`echo hi`: start → first stdout byte), ours (host, runc) vs raw spawn,
 * ssh over an open ControlMaster connection, and `runc exec`.
 */
export async function execLatency(ctx: BenchContext): Promise<Section> {
  const ssh = await ctx.ssh();
  const runc = await ctx.bareRunc();

  const variants = async (
    run: (argv: string[]) => Promise<number>,
    ours: (client: RouterClient, task: string) => Promise<number>,
    cmd: string[],
  ): Promise<(Variant | Missing)[]> => [
    ...(await ctx.ours(ours)),
    { name: RAW, run: () => run(cmd) },
    ssh.ok
      ? { name: SSH, run: () => run(ssh.value.argv(cmd.join(" "))) }
      : { name: SSH, unavailable: ssh.reason },
    runc.ok
      ? { name: RUNC, run: () => run(runc.value.argv(cmd)) }
      : { name: RUNC, unavailable: runc.reason },
  ];

  const opts = ctx.config.exec;
  const rt = await alternate(
    await variants(
      (argv) => timeExit(argv),
      (c, task) => oursExit(c, task, ["true"]),
      ["true"],
    ),
    { ...opts, label: "exec round trip" },
  );
  const fb = await alternate(
    await variants(
      (argv) => timeFirstByte(argv, "hi\n"),
      (c, task) => oursFirstByte(c, task, ["echo", "hi"], "hi\n"),
      ["echo", "hi"],
    ),
    { ...opts, label: "exec first byte" },
  );

  const baselines = [RAW, SSH, RUNC];
  const rtTable = latencyTable(rt, baselines, { header: "measure", value: "round trip (`true`)" });
  const fbTable = latencyTable(fb, baselines, {
    header: "measure",
    value: "first byte (`echo hi`)",
  });
  const ratio = (res: typeof rt, a: string, b: string) => medianOf(res, a) / medianOf(res, b);
  const hostRatio = ratio(rt, "ours (host)", RAW);
  const runcRatio = ratio(rt, "ours (runc)", RUNC);
  const runcFirstByte = ratio(fb, "ours (runc)", RUNC);
  return {
    title: "1. Exec latency",
    method:
      `Round trip: start → exit status known (ours: TaskExecStart → TaskExecWait; baselines: spawn → close, stdio piped). ` +
      `First byte: start → first stdout byte. ${opts.warmup} warm-up + ${opts.rounds} rounds, variants alternating.`,
    tables: [{ header: rtTable.header, rows: [...rtTable.rows, ...fbTable.rows] }],
    targets: [
      target(
        "round trip, ours (host) ≤ 1.5× raw spawn",
        fmtRatio(hostRatio, 1),
        check(hostRatio, (x) => x <= 1.5),
      ),
      target(
        "round trip, ours (runc) ≤ 0.4× runc exec (issue 14; issue 4 asked ≤ 1.1×)",
        fmtRatio(runcRatio, 1),
        check(runcRatio, (x) => x <= 0.4),
      ),
      target(
        "first byte, ours (runc) ≤ 0.4× runc exec (issue 14)",
        fmtRatio(runcFirstByte, 1),
        check(runcFirstByte, (x) => x <= 0.4),
      ),
    ],
    notes: [
      "ours runs through the project's RouterClient over loopback gRPC to a router subprocess.",
      "ssh reuses one ControlMaster connection to an sshd the bench started (its own keys, loopback port).",
    ],
  };
}
