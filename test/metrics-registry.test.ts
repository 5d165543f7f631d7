import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ImagesAdminClient, TaskImagesClient } from "../src/client/images.ts";
import { makeTree, rejectsKind, taskScratch } from "./helpers/images.ts";
import { sample, scrapeProm } from "./helpers/prom.ts";
import { registrySkipReason, startRegistry, type TestRegistry } from "./helpers/registry.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";

const skip = registrySkipReason();
const REPO = "taskrouter/metrics";
const RETRY = { attempts: 20, firstDelayMs: 50, maxDelayMs: 500 };

type Direction = "push" | "pull";
const bytes = (m: Map<string, number>, d: Direction) =>
  sample(m, `taskrouter_registry_bytes_total{direction="${d}"}`);
const transfers = (m: Map<string, number>, d: Direction, result: "ok" | "error") =>
  sample(m, `taskrouter_registry_transfers_total{direction="${d}",result="${result}"}`);
const timed = (m: Map<string, number>, d: Direction) =>
  sample(m, `taskrouter_registry_transfer_seconds_count{direction="${d}"}`);

/** The config and layer descriptors of the OCI manifest the registry holds for `tag`. */
async function registryManifest(reg: TestRegistry, tag: string) {
  const res = await fetch(`http://${reg.host}/v2/${REPO}/manifests/${tag}`, {
    headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
  });
  assert.equal(res.status, 200, `manifest ${tag}`);
  return (await res.json()) as { config: { size: number }; layers: { size: number }[] };
}

describe("metrics of registry transfers (--registry with --metrics-listen)", { skip }, () => {
  let reg: TestRegistry;
  let a: TestRouter;
  let b: TestRouter;
  let scratch: Awaited<ReturnType<typeof taskScratch>> | undefined;
  let image: string;
  const scrape = (r: TestRouter) => scrapeProm(`http://${r.daemon.metricsAddress}/metrics`);

  before(async () => {
    reg = await startRegistry();
    const config = {
      registry: { ref: `${reg.host}/${REPO}`, insecure: true, retry: RETRY },
      metricsListen: "127.0.0.1:0",
    };
    a = await startRouter(config);
    b = await startRouter(config);
  });
  after(async () => {
    await scratch?.cleanup();
    await b?.close();
    await a?.close();
    await reg?.close();
  });

  it("a snapshot's background push counts its blob bytes, one ok transfer and its duration", async () => {
    const before = await scrape(a);
    assert.equal(bytes(before, "push"), 0);
    const task = await a.newTask();
    scratch = await taskScratch(a.dataDir, task);
    await makeTree(join(scratch.dir, "src"));
    image = await new TaskImagesClient(a.client).snapshotDirectory(task, join(scratch.dir, "src"));
    // The snapshot queues a background push: wait until the metrics report it.
    let m = await scrape(a);
    for (const t0 = Date.now(); transfers(m, "push", "ok") < 1; m = await scrape(a)) {
      assert.equal(transfers(m, "push", "error"), 0, "the push failed");
      assert.ok(Date.now() - t0 < 30_000, "no push reported within 30 s");
      await sleep(50);
    }
    const man = await registryManifest(reg, image);
    // A fresh registry: every layer (the 1.5 MiB file's included) and the config were uploaded.
    const all = man.layers.reduce((n, l) => n + l.size, man.config.size);
    assert.ok(bytes(m, "push") > 1536 * 1024, `${bytes(m, "push")} bytes`);
    assert.equal(bytes(m, "push"), all);
    assert.equal(transfers(m, "push", "ok"), 1);
    assert.equal(timed(m, "push"), 1);
    assert.ok(sample(m, `taskrouter_registry_transfer_seconds_sum{direction="push"}`) > 0);

    // Pushing it again moves nothing (the registry has it): a transfer, no bytes.
    await new ImagesAdminClient(a.client).push(image);
    const again = await scrape(a);
    assert.equal(bytes(again, "push"), all);
    assert.equal(transfers(again, "push", "ok"), 2);
    assert.equal(bytes(again, "pull"), 0);
  });

  it("a second router's pull counts the layers it downloads; a second pull downloads nothing", async () => {
    assert.ok(image, "needs the previous test's image");
    const admin = new ImagesAdminClient(b.client);
    const before = await scrape(b);
    assert.equal(bytes(before, "pull"), 0);
    await admin.pull(image);
    const m = await scrape(b);
    const man = await registryManifest(reg, image);
    // The file layers and the config; the last layer (the tree) is not fetched.
    const fetched = man.layers.slice(0, -1).reduce((n, l) => n + l.size, man.config.size);
    assert.ok(bytes(m, "pull") > 1536 * 1024, `${bytes(m, "pull")} bytes`);
    assert.equal(bytes(m, "pull"), fetched);
    assert.equal(transfers(m, "pull", "ok"), 1);
    assert.equal(timed(m, "pull"), 1);
    assert.equal(bytes(m, "push"), 0, "B pushed nothing");

    await admin.pull(image); // B has it now
    const again = await scrape(b);
    assert.equal(bytes(again, "pull"), fetched);
    assert.equal(transfers(again, "pull", "ok"), 2);
  });

  it("a failed pull is a transfer with result error", async () => {
    const admin = new ImagesAdminClient(b.client);
    await rejectsKind(() => admin.pull(`im-${"0".repeat(32)}`), "NotFound");
    const m = await scrape(b);
    assert.equal(transfers(m, "pull", "error"), 1);
    assert.equal(timed(m, "pull"), 3);
  });
});
