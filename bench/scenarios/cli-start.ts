import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { performance } from "node:perf_hooks";
import type { BenchContext } from "../lib/context.ts";
import { check, type Section, target } from "../lib/report.ts";
import { alternate } from "../lib/rounds.ts";
import { fmtMs, fmtRatio } from "../lib/stats.ts";
import { latencyTable, medianOf } from "../lib/tables.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const BIN = resolve(ROOT, "bin/taskrouter.js");
const NODE = "node -e 0";
const HELP = "taskrouter --help (dist/)";
const SOURCE = "taskrouter --help (source, tsx)";

/** Wall time (ms) of one `node ARGS` run to its exit; throws on a non-zero exit. */
function timeNode(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((done, fail) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: "ignore" });
    child.once("error", fail);
    child.once("exit", (code) => {
      if (code === 0) done(performance.now() - t0);
      else fail(new Error(`node ${args.join(" ")} exited ${code}`));
    });
  });
}

/**
 * Scenario 7: the CLI's start time, `taskrouter --help` from the compiled
 * dist/ against a bare `node -e 0` (issue 16: ≤ 2×), and from the source
 * through tsx (what every start cost before dist/).
 */
export async function cliStart(ctx: BenchContext): Promise<Section> {
  const built = existsSync(resolve(ROOT, "dist/cli/main.js"));
  const dist = { ...process.env };
  delete dist.TASKROUTER_FROM_SOURCE;
  const source = { ...process.env, TASKROUTER_FROM_SOURCE: "1" };
  const { rounds, warmup } = ctx.config.exec;
  const res = await alternate(
    [
      { name: NODE, run: () => timeNode(["-e", "0"], dist) },
      built
        ? { name: HELP, run: () => timeNode([BIN, "--help"], dist) }
        : { name: HELP, unavailable: "no dist/: run `npm run build`" },
      { name: SOURCE, run: () => timeNode([BIN, "--help"], source) },
    ],
    { rounds: Math.min(rounds, 20), warmup, label: "cli start" },
  );
  const help = built ? medianOf(res, HELP) : Number.NaN;
  const node = medianOf(res, NODE);
  return {
    title: "7. CLI start",
    method: `Wall time of \`node bin/taskrouter.js --help\` to its exit (dist/, and the source through tsx) and of \`node -e 0\`, spawned by the bench. ${warmup} warm-up + ${Math.min(rounds, 20)} rounds, alternating.`,
    tables: [latencyTable(res, [NODE])],
    targets: [
      target(
        "taskrouter --help ≤ 2× node -e 0",
        `${fmtMs(help)} vs ${fmtMs(node)}: ${fmtRatio(help, node)}`,
        built ? check(help / node, (x) => x <= 2) : undefined,
      ),
    ],
    notes: [],
  };
}
