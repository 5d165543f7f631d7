import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ImagesAdminClient, TaskImagesClient } from "../src/client/images.ts";
import { makeTree, taskScratch } from "./helpers/images.ts";
import {
  freePort,
  registrySkipReason,
  startRegistry,
  type TestRegistry,
} from "./helpers/registry.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";

const skip = registrySkipReason();
const REPO = "restart/images";
const RETRY = { attempts: 60, firstDelayMs: 50, maxDelayMs: 500 };

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("a registry killed mid-push and restarted", { skip }, () => {
  let reg: TestRegistry;
  let a: TestRouter;
  let b: TestRouter;

  before(async () => {
    reg = await startRegistry();
    const registry = { ref: `${reg.host}/${REPO}`, insecure: true, retry: RETRY };
    a = await startRouter({ registry });
    b = await startRouter({ registry });
  });
  after(async () => {
    await b?.close();
    await a?.close();
    await reg?.close();
  });

  it("the push completes, the image is complete, uploaded blobs are not sent again", async () => {
    const task = await a.newTask();
    const s = await taskScratch(a.dataDir, task);
    try {
      // Four 48 MiB files: several layers, each takes a while to upload.
      const src = join(s.dir, "big");
      await mkdir(src);
      const want = new Map<string, string>();
      for (let i = 0; i < 4; i++) {
        const data = randomBytes(48 * 1024 * 1024);
        await writeFile(join(src, `part${i}`), data);
        want.set(`part${i}`, sha(data));
      }
      const image = await new TaskImagesClient(a.client).snapshotDirectory(task, src);
      let killedAt: { bytesDone: bigint; done: boolean } | undefined;
      let killing: Promise<void> | undefined;
      const r = await new ImagesAdminClient(a.client).push(image, (p) => {
        if (killing || p.done || p.bytesDone === 0n) return;
        killedAt = { bytesDone: p.bytesDone, done: p.done };
        killing = (async () => {
          await reg.kill();
          await reg.restart();
        })();
      });
      await killing;
      assert.ok(killedAt, "the registry was killed during the push");
      assert.ok(killedAt.bytesDone < r.bytesTotal, "killed before everything was sent");
      assert.equal(r.done, true);
      assert.equal(r.reference, `${reg.host}/${REPO}:${image}`);
      // Complete: B pulls it (every digest checked) and reads the same bytes.
      await new ImagesAdminClient(b.client).pull(image);
      const { manifest } = await b.daemon.images.inspect(image);
      for (const e of manifest.entries.filter((x) => x.type === "file")) {
        const bytes = await readFile(b.daemon.images.store.blobs.path(e.digest ?? ""));
        assert.equal(sha(bytes), want.get(e.path), e.path);
      }
      assert.equal(manifest.entries.filter((x) => x.type === "file").length, 4);
      // Blobs uploaded before the kill were not uploaded again: each at most once.
      const puts = await reg.blobPuts();
      assert.ok(puts > 0 && puts <= (await distinctBlobs(reg)), `${puts} uploads`);
    } finally {
      await s.cleanup();
    }
  });
});

describe("a registry down when the image is made", { skip }, () => {
  it("the snapshot succeeds at once; the image is pushed once the registry is up", async () => {
    const port = await freePort();
    const registry = {
      ref: `127.0.0.1:${port}/${REPO}`,
      insecure: true,
      retry: { attempts: 2, firstDelayMs: 20, maxDelayMs: 20 },
    };
    const a = await startRouter({ registry });
    let reg: TestRegistry | undefined;
    try {
      const task = await a.newTask();
      const s = await taskScratch(a.dataDir, task);
      try {
        await makeTree(join(s.dir, "src"));
        const image = await new TaskImagesClient(a.client).snapshotDirectory(
          task,
          join(s.dir, "src"),
        );
        // Nothing listens: a forced push fails (UNAVAILABLE) after its retries.
        await assert.rejects(new ImagesAdminClient(a.client).push(image), /unreachable/);
        reg = await startRegistry({ port });
        // The background push, retried with backoff, gets there without being asked again.
        for (;;) {
          const res = await fetch(`http://${reg.host}/v2/${REPO}/manifests/${image}`, {
            method: "HEAD",
            headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
          });
          if (res.status === 200) break;
          await sleep(200);
        }
      } finally {
        await s.cleanup();
      }
    } finally {
      await a.close();
      await reg?.close();
    }
  });
});

/** Distinct blobs of the repository's one image: its layers and config. */
async function distinctBlobs(reg: TestRegistry): Promise<number> {
  const tags = (await (await fetch(`http://${reg.host}/v2/${REPO}/tags/list`)).json()) as {
    tags: string[];
  };
  let n = 0;
  for (const tag of tags.tags) {
    const res = await fetch(`http://${reg.host}/v2/${REPO}/manifests/${tag}`, {
      headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
    });
    n += ((await res.json()) as { layers: unknown[] }).layers.length + 1;
  }
  return n;
}
