import { existsSync } from "node:fs";
import { appendFile, mkdir, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { RouterClient } from "../../src/client/client.ts";
import {
  TaskMountDirectoryRequestSchema,
  TaskSnapshotDirectoryRequestSchema,
} from "../../src/gen/modal_proto/task_command_router_pb.ts";
import { cleanup } from "../lib/cleanup.ts";
import type { BenchContext } from "../lib/context.ts";
import { unmountUnder } from "../lib/mounts.ts";
import { check, type Section, type Table, target, unavailableSection } from "../lib/report.ts";
import { alternate, progress } from "../lib/rounds.ts";
import { run } from "../lib/spawn.ts";
import { fmtBytes, fmtMs, median, p99 } from "../lib/stats.ts";
import { medianOf } from "../lib/tables.ts";
import { generateTree } from "../lib/tree.ts";

const TITLE = "5. Images";
const IMAGES_SRC = resolve(import.meta.dirname, "../../src/images");

async function snapshot(c: RouterClient, task: string, path: string): Promise<string> {
  const req = RouterClient.message(TaskSnapshotDirectoryRequestSchema, {
    taskId: task,
    path: Buffer.from(path),
  });
  const res = await c.unary<{ imageId: string }>("taskSnapshotDirectory", req);
  if (!res.imageId) throw new Error("TaskSnapshotDirectory returned no image_id");
  return res.imageId;
}

async function mount(c: RouterClient, task: string, path: string, imageId: string) {
  const req = RouterClient.message(TaskMountDirectoryRequestSchema, {
    taskId: task,
    path: Buffer.from(path),
    imageId,
  });
  await c.unary("taskMountDirectory", req);
}

async function timed<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = performance.now();
  const v = await fn();
  return [performance.now() - t0, v];
}

/**
 * Scenario 5 (once src/images exists): snapshot of a generated tree vs
 * `tar -c | sha256sum`; re-snapshot of a mounted copy after one change;
 * mount time (first, and once unpacked) for a small and the large image;
 * `cp -a` as the copy baseline. Runs on a host task (paths are this
 * machine's); every mount under the bench's dir is removed afterwards.
 */
export async function images(ctx: BenchContext): Promise<Section> {
  if (!existsSync(IMAGES_SRC))
    return unavailableSection(TITLE, "src/images not present yet (issue 5)");
  const shared = await ctx.router();
  if (!shared.ok) return unavailableSection(TITLE, shared.reason);
  const { proc, hostTask } = shared.value;
  const c = proc.client;
  // A host task's mounts and snapshots must stay inside its own directory.
  const dir = join(proc.dataDir, "tasks", hostTask, "work", "images-bench");
  await mkdir(dir, { recursive: true });
  cleanup.add("image bench mounts", () => unmountUnder(dir));
  try {
    await writeFile(join(dir, "probe.txt"), "probe\n");
    await mkdir(join(dir, "probe"), { recursive: true });
    await writeFile(join(dir, "probe", "a"), "a\n");
    await snapshot(c, hostTask, join(dir, "probe"));
  } catch (err) {
    return unavailableSection(TITLE, `TaskSnapshotDirectory: ${String(err).slice(0, 200)}`);
  }
  const { files, bytes, rounds } = ctx.config.images;
  const tree = join(dir, "tree");
  progress(`images: generating ${files} files / ${fmtBytes(bytes)}`);
  await generateTree(tree, files, bytes);
  const size = `${files} files / ${fmtBytes(bytes)}`;

  // Snapshot vs tar | sha256sum, alternating.
  let bigImage = "";
  const snap = await alternate(
    [
      {
        name: "ours: snapshot",
        run: async () => {
          const [ms, id] = await timed(() => snapshot(c, hostTask, tree));
          bigImage = id;
          return ms;
        },
      },
      {
        name: "tar -c | sha256sum",
        run: async () =>
          (await timed(() => run(["sh", "-c", `tar -C '${tree}' -cf - . | sha256sum`])))[0],
      },
      {
        name: "cp -a",
        run: async () => {
          const dest = join(dir, "copy");
          const [ms] = await timed(() => run(["cp", "-a", tree, dest]));
          await rm(dest, { recursive: true, force: true });
          return ms;
        },
      },
    ],
    { rounds, warmup: 0, label: "images: snapshot" },
  );
  const tar = medianOf(snap, "tar -c | sha256sum");
  // The first snapshot stores every blob; later ones find them stored (same tree).
  const oursRes = snap.get("ours: snapshot");
  const ours = oursRes?.samples[0] ?? Number.NaN;
  const table: Table = { header: ["measure", "median", "p99", "n", "note"], rows: [] };
  for (const r of snap.values()) {
    const row = (name: string, xs: number[], note = "") =>
      table.rows.push([
        `${name} (${size})`,
        fmtMs(median(xs)),
        fmtMs(p99(xs)),
        String(xs.length),
        note,
      ]);
    if (r.unavailable) {
      table.rows.push([`${r.name} (${size})`, `unavailable: ${r.unavailable}`, "", "", ""]);
    } else if (r === oursRes) {
      row("ours: snapshot, first", r.samples.slice(0, 1), "every blob new to the store");
      if (r.samples.length > 1)
        row("ours: snapshot, again", r.samples.slice(1), "same tree: blobs already stored");
    } else row(r.name, r.samples);
  }
  const add = (measure: string, samples: number[], note = "") =>
    table.rows.push([
      measure,
      fmtMs(median(samples)),
      fmtMs(p99(samples)),
      String(samples.length),
      note,
    ]);
  const fail = (measure: string, err: unknown) =>
    table.rows.push([measure, `unavailable: failed: ${String(err).slice(0, 200)}`, "", "", ""]);

  // Mount times (first = may unpack; again = unpacked), then re-snapshot after one change.
  let resnap = Number.NaN;
  let mountAgain = Number.NaN;
  if (bigImage) {
    try {
      const smallImage = await snapshot(c, hostTask, join(dir, "probe"));
      for (const [name, id] of [
        ["small image (1 file)", smallImage],
        [`large image (${size})`, bigImage],
      ] as const) {
        progress(`images: mount ${name}`);
        const [first] = await timed(() => mount(c, hostTask, join(dir, `m-${id}-0`), id));
        add(`mount, first: ${name}`, [first], "includes any unpack");
        const again: number[] = [];
        for (let i = 1; i <= Math.max(3, rounds); i++) {
          again.push((await timed(() => mount(c, hostTask, join(dir, `m-${id}-${i}`), id)))[0]);
        }
        add(`mount, unpacked: ${name}`, again);
        if (id === bigImage) mountAgain = median(again);
      }
      const mnt = join(dir, `m-${bigImage}-0`);
      const samples: number[] = [];
      for (let i = 0; i < Math.max(3, rounds); i++) {
        progress(`images: re-snapshot ${i + 1}`);
        await appendFile(join(mnt, "d0", "f0"), `change ${i}\n`);
        samples.push((await timed(() => snapshot(c, hostTask, mnt)))[0]);
      }
      resnap = median(samples);
      add(`re-snapshot after one change (${size}, mounted)`, samples);
    } catch (err) {
      fail("mount / re-snapshot", err);
    }
  }
  progress("");
  await unmountUnder(dir);
  return {
    title: TITLE,
    method: `A generated tree of ${size} (distinct contents) on a host task. ${rounds} round(s), alternating; mounts under the bench's temp dir.`,
    tables: [table],
    targets: [
      target(
        "first snapshot ≥ 80% of `tar -c | sha256sum` speed",
        `${((100 * tar) / ours).toFixed(0)}%`,
        check(tar / ours, (x) => x >= 0.8),
      ),
      target(
        "re-snapshot after one change ≤ 5% of tar",
        `${((100 * resnap) / tar).toFixed(1)}%`,
        check(resnap / tar, (x) => x <= 0.05),
      ),
      target(
        "mount ≤ 20 ms once unpacked (large image)",
        fmtMs(mountAgain),
        check(mountAgain, (x) => x <= 20),
      ),
    ],
    notes: [
      "The tree is in the page cache for every variant (it was just written and is re-read each round).",
    ],
  };
}
