import { createWriteStream } from "node:fs";
import { mkdir, rm, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { pipeline } from "node:stream/promises";
import type { RouterClient } from "../../src/client/client.ts";
import { TaskFilesystem } from "../../src/client/fs.ts";
import { fileSource } from "../../src/client/stdin-stream.ts";
import type { BenchContext } from "../lib/context.ts";
import { DiskLog, diskMeter } from "../lib/disk.ts";
import {
  check,
  type Section,
  type Table,
  type Target,
  target,
  unavailableSection,
} from "../lib/report.ts";
import { alternate, type Missing, progress, type Variant } from "../lib/rounds.ts";
import { run } from "../lib/spawn.ts";
import { fmtBytes, fmtMs, fmtRatio, median } from "../lib/stats.ts";
import { medianOf, throughputTable } from "../lib/tables.ts";

const TITLE = "6. File transfer";
const BIN = resolve(import.meta.dirname, "../../bin/taskrouter.js");
const MiB = 2 ** 20;
const SCP_IN = "scp (upload)";
const SCP_OUT = "scp (download)";
const SCP_NEW = "scp (download, new file)";

async function timed(fn: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** Throws unless the file at `path` (here, or in `fs`'s task) has `bytes` bytes. */
async function expectSize(path: string, bytes: number, fs?: TaskFilesystem): Promise<void> {
  const size = fs ? (await fs.stat(path)).size : (await stat(path)).size;
  if (size !== bytes) throw new Error(`${path}: ${size} bytes, expected ${bytes}`);
}

/** The bearer token a client sends (the shared router checks tokens). */
function tokenOf(client: RouterClient): string | undefined {
  const v = client.metadata().get("authorization")[0];
  return typeof v === "string" ? v.replace(/^Bearer /, "") : undefined;
}

/**
 * Scenario 6: one 256 MiB file into a task and back out, by `taskrouter cp`
 * (a CLI process: start-up included) and by the SDK-style API in this process
 * (TaskFilesystem.writeFile / readFile to a local file), against `scp` to the
 * bench's sshd over its multiplexed connection. Host and runc tasks.
 */
export async function files(ctx: BenchContext): Promise<Section> {
  const shared = await ctx.router();
  if (!shared.ok) return unavailableSection(TITLE, shared.reason);
  const { proc, hostTask, runcTask } = shared.value;
  const ssh = await ctx.ssh();
  const bytes = 256 * MiB;
  const { rounds, warmup } = ctx.config.stdin;
  const dir = join(ctx.tmp, "files");
  await mkdir(join(dir, "task"), { recursive: true });
  const src = join(dir, "src.bin");
  progress(`files: writing ${fmtBytes(bytes)}`);
  await run(["sh", "-c", `head -c ${bytes} /dev/urandom > '${src}'`]);
  const token = tokenOf(proc.client);
  const cli = (args: string[]) =>
    run([
      process.execPath,
      BIN,
      "--server",
      proc.address,
      ...(token ? ["--token", token] : []),
      "cp",
      "-q",
      ...args,
    ]);

  const tasks: { label: string; task: string; remote: string; fs: TaskFilesystem }[] = [
    {
      label: "host",
      task: hostTask,
      remote: join(dir, "task"),
      fs: new TaskFilesystem(proc.client, hostTask),
    },
  ];
  if (runcTask.ok) {
    const fs = new TaskFilesystem(proc.client, runcTask.value);
    await fs.makeDirectory("/tmp/bench-files");
    tasks.push({ label: "runc", task: runcTask.value, remote: "/tmp/bench-files", fs });
  }
  const up: (Variant | Missing)[] = [];
  const down: (Variant | Missing)[] = [];
  for (const t of tasks) {
    const inTask = `${t.remote}/in.bin`;
    const onHost = t.label === "host";
    const verify = (p: string) => expectSize(p, bytes, onHost ? undefined : t.fs);
    // The download source: the file written into the task by the upload variants.
    await t.fs.writeFile(`${t.remote}/out.bin`, fileSource(src));
    up.push(
      {
        name: `taskrouter cp (${t.label})`,
        run: () =>
          timed(async () => {
            await cli([src, `${t.task}:${inTask}`]);
            await verify(inTask);
          }),
      },
      {
        name: `fs.writeFile (${t.label})`,
        run: () =>
          timed(async () => {
            await t.fs.writeFile(inTask, fileSource(src));
            await verify(inTask);
          }),
      },
    );
    // Every variant writes a target of its own: what one costs must not depend on which
    // variant wrote the file before it (the rounds run in a shuffled order).
    const dst = join(dir, `back-${t.label}.bin`);
    const fsDst = join(dir, `back-${t.label}-fs.bin`);
    down.push(
      {
        name: `taskrouter cp (${t.label})`,
        run: () =>
          timed(async () => {
            await cli([`${t.task}:${t.remote}/out.bin`, dst]);
            await expectSize(dst, bytes);
          }),
      },
      {
        name: `fs.readFile (${t.label})`,
        run: () =>
          timed(async () => {
            await pipeline(t.fs.readFile(`${t.remote}/out.bin`), createWriteStream(fsDst));
            await expectSize(fsDst, bytes);
          }),
      },
    );
  }
  if (!runcTask.ok) {
    for (const v of [up, down]) {
      v.push({ name: "taskrouter cp (runc)", unavailable: runcTask.reason });
    }
  }
  if (ssh.ok) {
    // scp over the master connection: ssh's options, with scp's -P for the port, and its
    // original protocol (-O): the bench's sshd has no sftp subsystem.
    const argv = ssh.value.argv("true");
    const host = argv[argv.length - 2] as string;
    const opts = argv.slice(1, -2).map((a) => (a === "-p" ? "-P" : a));
    const scp = (from: string, to: string) => run(["scp", "-q", "-O", ...opts, from, to]);
    const scpIn = join(dir, "scp-in.bin");
    const scpOut = join(dir, "scp-out.bin");
    up.push({
      name: SCP_IN,
      run: () =>
        timed(async () => {
          await scp(src, `${host}:${scpIn}`);
          await expectSize(scpIn, bytes);
        }),
    });
    const scpNew = join(dir, "scp-new.bin");
    down.push(
      {
        name: SCP_OUT,
        run: () =>
          timed(async () => {
            await scp(`${host}:${src}`, scpOut);
            await expectSize(scpOut, bytes);
          }),
      },
      {
        // Into a file that is not there (removed after each round, untimed), as cp's target is new.
        name: SCP_NEW,
        run: async () => {
          const ms = await timed(async () => {
            await scp(`${host}:${src}`, scpNew);
            await expectSize(scpNew, bytes);
          });
          await rm(scpNew);
          return ms;
        },
      },
    );
  } else {
    up.push({ name: SCP_IN, unavailable: ssh.reason });
    down.push(
      { name: SCP_OUT, unavailable: ssh.reason },
      { name: SCP_NEW, unavailable: ssh.reason },
    );
  }
  const startup: number[] = [];
  for (let i = 0; i < 3; i++)
    startup.push(await timed(() => run([process.execPath, BIN, "--help"]).then(() => {})));
  const meter = await diskMeter(dir);
  const diskUp = new DiskLog(meter);
  const diskDown = new DiskLog(meter);
  const metered = (log: DiskLog, vs: (Variant | Missing)[]) =>
    vs.map((v) => ("run" in v ? { ...v, run: log.wrap(v.name, v.run) } : v));
  const resUp = await alternate(metered(diskUp, up), { rounds, warmup, label: "files upload" });
  const resDown = await alternate(metered(diskDown, down), {
    rounds,
    warmup,
    label: "files download",
  });
  const diskNote = (direction: string, log: DiskLog, vs: (Variant | Missing)[]) => {
    const m = log.medians(vs.map((v) => v.name));
    const what = m.map((d) => `${d.name} ${fmtBytes(d.written)} written, busy ${fmtMs(d.busyMs)}`);
    return `Disk under the bench's files during each ${direction} (median of its runs, warm-up included; the whole device, every process): ${m.length ? what.join("; ") : "not available (no /proc/diskstats entry)"}.`;
  };
  const table = (direction: string, res: typeof resUp, bases: string[]): Table => {
    const t = throughputTable(res, bytes, bases);
    return { header: ["direction", ...t.header], rows: t.rows.map((r) => [direction, ...r]) };
  };
  const goal = (name: string, res: typeof resUp, base: string): Target => {
    const ratio = medianOf(res, base) / medianOf(res, name);
    return target(
      `${name} ≥ 1.25× ${base}`,
      fmtRatio(medianOf(res, base), medianOf(res, name)),
      check(ratio, (x) => x >= 1.25),
    );
  };
  return {
    title: TITLE,
    method: `${fmtBytes(bytes)} of random bytes into a task (upload) and out of it (download): \`taskrouter cp\` as a CLI process (its start-up included), the SDK-style TaskFilesystem in the bench's process, and \`scp\` over the bench sshd's multiplexed connection (downloads also into a new file each round, for comparison: \`taskrouter cp\` always writes a new file and renames it over the target); each run checks the copy's size. ${warmup} warm-up + ${rounds} rounds, alternating. Speed ratios are scp's time over ours.`,
    tables: [table("upload", resUp, [SCP_IN]), table("download", resDown, [SCP_OUT, SCP_NEW])],
    targets: [
      goal("taskrouter cp (host)", resUp, SCP_IN),
      goal("taskrouter cp (host)", resDown, SCP_OUT),
      goal("fs.writeFile (host)", resUp, SCP_IN),
      goal("fs.readFile (host)", resDown, SCP_OUT),
    ],
    notes: [
      `The CLI's own start-up (\`taskrouter --help\`, median of 3): ${fmtMs(median(startup))}; it is part of every \`taskrouter cp\` time.`,
      "Upload targets name the upload table's rows, download targets the download table's (issue 13: file transfer ≥ 1.25× scp).",
      diskNote("upload", diskUp, up),
      diskNote("download", diskDown, down),
    ],
  };
}
