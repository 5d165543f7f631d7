/**
 * `npm run fuzz [-- --count 100000] [--seed N] [--concurrency 32] [--auth jwt|none]`
 *
 * Starts a router in this process (host runtime, a temp data dir), sends
 * `--count` malformed requests to every method of every service with and
 * without tokens (bench/lib/fuzz.ts), then checks that it still answers a
 * health check and runs a command. Exits 1 on any INTERNAL or UNKNOWN
 * answer, any error the router logged, or an unhealthy router.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { issueToken } from "../src/auth/tokens.ts";
import { TasksClient } from "../src/client/admin.ts";
import { RouterClient } from "../src/client/client.ts";
import { DEFAULT_CONFIG, startDaemon } from "../src/daemon.ts";
import { describeCodes, runFuzz } from "./lib/fuzz.ts";

const { values } = parseArgs({
  options: {
    count: { type: "string", default: "100000" },
    seed: { type: "string", default: String(Date.now() % 1_000_000) },
    concurrency: { type: "string", default: "32" },
    auth: { type: "string", default: "jwt" },
  },
});
const auth = values.auth === "none" ? "none" : "jwt";
const count = Number(values.count);
const seed = Number(values.seed);

const errors: string[] = [];
const log = pino({ level: "error" }, { write: (s: string) => void errors.push(s) });
const dataDir = await mkdtemp(join(tmpdir(), "taskrouter-fuzz-"));
const daemon = await startDaemon(
  { ...DEFAULT_CONFIG, listen: "127.0.0.1:0", dataDir, runtime: "host", auth: { mode: auth } },
  log,
);
let failed = false;
try {
  const key = daemon.signingKey;
  const admin = key ? await issueToken(key, { admin: true }, 3_600_000) : undefined;
  const task = key ? await issueToken(key, { task: "live" }, 3_600_000) : undefined;
  const client = new RouterClient(daemon.address, admin ? { token: admin } : {});
  await new TasksClient(client).create("live");
  process.stdout.write(`fuzz: ${count} calls, seed ${seed}, auth ${auth}, ${daemon.address}\n`);
  const t0 = performance.now();
  const report = await runFuzz({
    address: daemon.address,
    tokens: [undefined, "not.a.token", task, admin],
    count,
    seed,
    concurrency: Number(values.concurrency),
    onProgress: (n) => {
      if (process.stdout.isTTY) process.stdout.write(`\r${n} calls`);
    },
  });
  const secs = (performance.now() - t0) / 1000;
  process.stdout.write(
    `${process.stdout.isTTY ? "\r" : ""}${report.calls} calls in ${secs.toFixed(1)} s: ${describeCodes(report.codes)}\n`,
  );
  if (report.internalOrUnknown > 0) {
    failed = true;
    process.stdout.write(`INTERNAL/UNKNOWN: ${report.internalOrUnknown}\n`);
    for (const f of report.findings.slice(0, 10)) process.stdout.write(`  ${JSON.stringify(f)}\n`);
  }
  const id = await client.start("live", ["true"]);
  const exit = await client.wait("live", id);
  client.close();
  if (exit.code !== 0) {
    failed = true;
    process.stdout.write(`a real exec after the fuzz ended ${JSON.stringify(exit)}\n`);
  }
  if (errors.length > 0) {
    failed = true;
    process.stdout.write(`the router logged ${errors.length} errors, e.g. ${errors[0]}`);
  }
} finally {
  await daemon.close();
  await rm(dataDir, { recursive: true, force: true });
}
process.stdout.write(failed ? "fuzz: FAILED\n" : "fuzz: ok\n");
process.exit(failed ? 1 : 0);
