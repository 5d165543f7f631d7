/**
 * `npm run bench [-- --quick] [--only exec,stdout,stdin,concurrency,images,files,cli]
 *  [--rounds N] [--no-write] [--no-install] [--out FILE]`
 *
 * Runs each scenario's variants (ours and its baselines) alternately after a
 * warm-up, prints median/p99 tables with ratios and targets, and writes the
 * tables with the machine's description into BENCHMARKS.md (between the
 * bench markers; the rest of that file is kept). Every process, container,
 * mount and temp dir it starts is removed on every exit path.
 */
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { cleanup } from "./lib/cleanup.ts";
import { BenchContext, benchConfig } from "./lib/context.ts";
import { machineLines } from "./lib/machine.ts";
import { renderSection, type Section, unavailableSection } from "./lib/report.ts";
import { progress } from "./lib/rounds.ts";
import { cliStart } from "./scenarios/cli-start.ts";
import { concurrency } from "./scenarios/concurrency.ts";
import { execLatency } from "./scenarios/exec-latency.ts";
import { files } from "./scenarios/files.ts";
import { images } from "./scenarios/images.ts";
import { stdinThroughput } from "./scenarios/stdin.ts";
import { stdoutThroughput } from "./scenarios/stdout.ts";
import { stdoutTwoReaders } from "./scenarios/stdout-two-readers.ts";

type Scenario = { title: string; fn: (ctx: BenchContext) => Promise<Section> };

/** `--only` names; a name may run several sections, in order. */
const SCENARIOS: Record<string, Scenario[]> = {
  exec: [{ title: "1. Exec latency", fn: execLatency }],
  stdout: [
    { title: "2. Stdout throughput", fn: stdoutThroughput },
    { title: "2b. Stdout to two readers", fn: stdoutTwoReaders },
  ],
  stdin: [{ title: "3. Stdin throughput", fn: stdinThroughput }],
  concurrency: [{ title: "4. Concurrency", fn: concurrency }],
  images: [{ title: "5. Images", fn: images }],
  files: [{ title: "6. File transfer", fn: files }],
  cli: [{ title: "7. CLI start", fn: cliStart }],
};

const BEGIN = "<!-- bench:begin (written by `npm run bench`; edits here are overwritten) -->";
const END = "<!-- bench:end -->";

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    rounds: { type: "string" },
    "no-write": { type: "boolean", default: false },
    "no-install": { type: "boolean", default: false },
    out: { type: "string", default: resolve(import.meta.dirname, "../BENCHMARKS.md") },
  },
});

const only = values.only ? values.only.split(",").map((s) => s.trim()) : Object.keys(SCENARIOS);
for (const name of only) {
  if (!SCENARIOS[name]) {
    process.stderr.write(
      `bench: unknown scenario ${name} (have: ${Object.keys(SCENARIOS).join(", ")})\n`,
    );
    process.exit(2);
  }
}
const rounds = values.rounds ? Number(values.rounds) : undefined;
if (rounds !== undefined && !(Number.isInteger(rounds) && rounds > 0)) {
  process.stderr.write("bench: --rounds takes a positive integer\n");
  process.exit(2);
}

let stopping = false;
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    if (stopping) return;
    stopping = true;
    progress("");
    process.stderr.write(`bench: ${sig}, cleaning up…\n`);
    void cleanup.run().finally(() => process.exit(130));
  });
}

process.once("uncaughtException", (err) => {
  progress("");
  process.stderr.write(`bench: ${err.stack ?? err.message}\n`);
  void cleanup.run().finally(() => process.exit(1));
});

async function main(): Promise<void> {
  const t0 = performance.now();
  const config = benchConfig(values.quick, !values["no-install"], rounds);
  const tmp = await mkdtemp(join(tmpdir(), "taskrouter-bench-"));
  cleanup.add(`temp dir ${tmp}`, () => rm(tmp, { recursive: true, force: true }));
  const ctx = new BenchContext(config, tmp);
  const mode = values.quick ? "quick (--quick)" : "full";
  process.stdout.write(`taskrouter bench, ${mode}: ${only.join(", ")}\n\n`);
  const sections: Section[] = [];
  for (const s of only.flatMap((name) => SCENARIOS[name] ?? [])) {
    let section: Section;
    const started = performance.now();
    try {
      section = await s.fn(ctx);
    } catch (err) {
      progress("");
      section = unavailableSection(
        s.title,
        `failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`.slice(0, 600),
      );
    }
    section.notes.push(`Scenario time: ${((performance.now() - started) / 1000).toFixed(0)} s.`);
    sections.push(section);
    process.stdout.write(`${renderSection(section)}\n`);
  }
  const versions: string[] = [];
  const ssh = ctx.sshStarted ? await ctx.ssh() : undefined;
  if (ssh?.ok) versions.push(`ssh: ${ssh.value.version}`);
  const runc = ctx.runcStarted ? await ctx.bareRunc() : undefined;
  if (runc?.ok) versions.push(`runc: ${runc.value.version}`);
  const elapsed = (performance.now() - t0) / 1000;
  const body = [
    BEGIN,
    "## Latest results",
    "",
    `Mode: ${mode}; scenarios: ${only.join(", ")}; the run took ${elapsed.toFixed(0)} s.`,
    "",
    ...machineLines(versions),
    "",
    ...sections.map(renderSection),
    END,
  ].join("\n");
  process.stdout.write(`bench: done in ${elapsed.toFixed(0)} s\n`);
  if (!values["no-write"]) {
    await writeResults(values.out, body);
    process.stdout.write(`bench: wrote ${values.out}\n`);
  }
}

/** Replaces the bench block of `file` (or creates the file with a header). */
async function writeResults(file: string, block: string): Promise<void> {
  const old = existsSync(file) ? await readFile(file, "utf8") : "";
  const i = old.indexOf(BEGIN);
  const j = old.indexOf(END);
  let text: string;
  if (i >= 0 && j > i) text = old.slice(0, i) + block + old.slice(j + END.length);
  else if (old) text = `${old.trimEnd()}\n\n${block}\n`;
  else
    text = `# Benchmarks\n\nRun with \`npm run bench\` (\`-- --quick\` for a short run).\n\n${block}\n`;
  await writeFile(file, text);
}

let code = 0;
try {
  await main();
} catch (err) {
  process.stderr.write(`bench: ${err instanceof Error ? err.stack : String(err)}\n`);
  code = 1;
} finally {
  progress("");
  await cleanup.run();
}
process.exit(code);
