import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { TasksClient } from "../src/client/admin.ts";
import { RouterClient } from "../src/client/client.ts";
import { TaskImagesClient } from "../src/client/images.ts";
import { type Daemon, DEFAULT_CONFIG, startDaemon } from "../src/daemon.ts";
import { killAll, spawnCli, waitForOutput } from "./helpers/cli-run.ts";
import { blobFiles, scratch } from "./helpers/images.ts";

/** Every blob's content hashes to its name (no corrupt blob is ever visible). */
async function assertBlobsIntact(dataDir: string): Promise<void> {
  for (const hex of await blobFiles(dataDir)) {
    const data = await readFile(join(dataDir, "images", "blobs", "sha256", hex));
    assert.equal(createHash("sha256").update(data).digest("hex"), hex);
  }
}

describe("a router killed in the middle of a snapshot leaves a consistent store", () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let daemon: Daemon | undefined;

  before(async () => {
    s = await scratch();
  });
  after(async () => {
    await killAll();
    await daemon?.close();
    await s.cleanup();
  });

  it("SIGKILL during a big snapshot: no visible image, intact blobs; gc and a re-snapshot work", async () => {
    const dataDir = join(s.dir, "data");
    const child = spawnCli([
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--data-dir",
      dataDir,
      "--auth",
      "none",
      "--log-level",
      "silent",
    ]);
    const [, address] = (await waitForOutput(child, /listening on (\S+)/)) as unknown as [
      string,
      string,
    ];
    const client = new RouterClient(address, {
      retry: { tries: 1, baseDelayMs: 10, maxDelayMs: 10 },
    });
    const task = (await new TasksClient(client).create("crash")).taskId;
    // In the host task's own directory, where its image calls are confined.
    const big = join(dataDir, "tasks", task, "work", "big");
    const chunk = Buffer.alloc(256 * 1024);
    for (let d = 0; d < 8; d++) {
      await mkdir(join(big, `d${d}`), { recursive: true });
      for (let f = 0; f < 40; f++) {
        chunk.fill(d * 40 + f + 1);
        await writeFile(join(big, `d${d}`, `f${f}`), chunk);
      }
    }
    const ac = new AbortController();
    const snap = new TaskImagesClient(client)
      .snapshotDirectory(task, big, { signal: ac.signal })
      .then(
        () => "finished",
        () => "failed",
      );
    // Kill it once blobs are being written (temporary files appear in the store).
    const tmp = join(dataDir, "images", "tmp");
    let seen = 0;
    for (let i = 0; i < 2000 && seen === 0; i++) {
      seen = (await readdir(tmp).catch(() => [])).filter((n) => n.startsWith("blob-")).length;
      if (seen === 0) await sleep(5);
    }
    assert.ok(seen > 0, "the snapshot never started writing blobs");
    const exited = once(child, "exit");
    process.kill(child.pid as number, "SIGKILL");
    await exited;
    ac.abort();
    assert.equal(await snap, "failed");
    client.close();

    // No visible half image; every blob matches its name.
    assert.deepEqual(await readdir(join(dataDir, "images", "manifests")), []);
    await assertBlobsIntact(dataDir);

    daemon = await startDaemon(
      {
        ...DEFAULT_CONFIG,
        listen: "127.0.0.1:0",
        dataDir,
        auth: { mode: "none" },
        runtime: "host",
      },
      pino({ level: "silent" }),
    );
    const gc = await daemon.images.gc();
    assert.deepEqual(gc.imagesRemoved, []);
    assert.deepEqual(await readdir(tmp), []);
    const id = await daemon.images.snapshotDirectory("crash", Buffer.from(big), {});
    const { manifest } = await daemon.images.inspect(id);
    assert.equal(manifest.entries.filter((e) => e.type === "file").length, 320);
    await assertBlobsIntact(dataDir);
    const have = new Set(await blobFiles(dataDir));
    for (const e of manifest.entries) if (e.digest) assert.ok(have.has(e.digest.slice(7)));
    assert.equal((await daemon.images.gc()).blobsRemoved, 0);
  });
});
