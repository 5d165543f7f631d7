import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { realpathSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { pino } from "pino";
import { tarDirectory } from "../src/cli/tar-dir.ts";
import { TasksClient } from "../src/client/admin.ts";
import { ImagesAdminClient, TaskImagesClient } from "../src/client/images.ts";
import { type DaemonConfig, DEFAULT_CONFIG, startDaemon } from "../src/daemon.ts";
import { runCli } from "./helpers/cli-run.ts";
import { makeTree, rejectsKind, taskScratch } from "./helpers/images.ts";
import { registrySkipReason, startRegistry, type TestRegistry } from "./helpers/registry.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { runcSkipReason, runIn, startRuncRouter } from "./helpers/runc.ts";
import { readTree } from "./helpers/tree.ts";

const run = promisify(execFile);
const skip = registrySkipReason({ skopeo: true });
const REPO = "taskrouter/images";
/** Quick retries: these tests restart the registry themselves. */
const RETRY = { attempts: 40, firstDelayMs: 50, maxDelayMs: 500 };

function registryConfig(
  reg: TestRegistry,
  extra: Partial<NonNullable<DaemonConfig["registry"]>> = {},
) {
  return { registry: { ref: `${reg.host}/${REPO}`, insecure: true, retry: RETRY, ...extra } };
}

/** The OCI manifest the registry holds for `tag` (read with fetch, as a third party would). */
async function registryManifest(reg: TestRegistry, tag: string) {
  const res = await fetch(`http://${reg.host}/v2/${REPO}/manifests/${tag}`, {
    headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
  });
  assert.equal(res.status, 200, `manifest ${tag}`);
  return (await res.json()) as { layers: { digest: string; size: number }[] };
}

describe("--registry: bad values stop the start with a clear message", () => {
  for (const [value, why] of [
    ["registry.example.com", /no repository/],
    ["https://registry.example.com/team", /no scheme/],
    ["registry.example.com/Team", /bad repository/],
    ["registry.example.com/team:tag", /without a tag/],
    ["bad_host!/team", /bad host/],
    ["127.0.0.1:99999/team", /bad port/],
  ] as const) {
    it(`refuses ${value}`, async () => {
      const dataDir = await mkdtemp(join(tmpdir(), "taskrouter-reg-bad-"));
      try {
        await assert.rejects(
          startDaemon(
            {
              ...DEFAULT_CONFIG,
              listen: "127.0.0.1:0",
              dataDir,
              auth: { mode: "none" },
              runtime: "host",
              registry: { ref: value },
            },
            pino({ level: "silent" }),
          ),
          (err: Error) => {
            assert.match(err.message, /^--registry /);
            assert.match(err.message, why);
            assert.match(err.message, /HOST\[:PORT\]\/REPO/);
            return true;
          },
        );
      } finally {
        await rm(dataDir, { recursive: true, force: true });
      }
    });
  }

  it("serve exits 1 naming the flag; --registry-auth with a missing file too", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "taskrouter-reg-bad-"));
    try {
      const common = ["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--auth", "none"];
      const a = await runCli([...common, "--registry", "nope"]);
      assert.equal(a.code, 1);
      assert.match(a.stderr, /cannot start: --registry "nope": no repository/);
      const b = await runCli([
        ...common,
        "--registry",
        "127.0.0.1:5000/x",
        "--registry-auth",
        join(dataDir, "missing.json"),
      ]);
      assert.equal(b.code, 1);
      assert.match(
        b.stderr,
        /cannot start: --registry-auth .*missing\.json: cannot read it \(ENOENT\)/,
      );
      const c = await runCli([...common, "--registry-insecure"]);
      assert.equal(c.code, 1);
      assert.match(c.stderr, /need --registry/);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe("two routers sharing a registry", { skip }, () => {
  let reg: TestRegistry;
  let a: TestRouter;
  let b: TestRouter;
  let taskA: string;
  let taskB: string;
  let sa: Awaited<ReturnType<typeof taskScratch>>;
  let sb: Awaited<ReturnType<typeof taskScratch>>;
  let image: string;

  before(async () => {
    reg = await startRegistry();
    a = await startRouter(registryConfig(reg));
    b = await startRouter(registryConfig(reg));
    taskA = await a.newTask();
    taskB = await b.newTask();
    sa = await taskScratch(a.dataDir, taskA);
    sb = await taskScratch(b.dataDir, taskB);
    await makeTree(join(sa.dir, "src"));
    image = await new TaskImagesClient(a.client).snapshotDirectory(taskA, join(sa.dir, "src"));
  });
  after(async () => {
    await sb?.cleanup();
    await sa?.cleanup();
    await b?.close();
    await a?.close();
    await reg?.close();
  });

  it("a snapshot on A mounts on B byte-exact (B pulls it first)", async () => {
    // `image push` waits for the push (the snapshot's background push may still run).
    const pushed = await new ImagesAdminClient(a.client).push(image);
    assert.equal(pushed.reference, `${reg.host}/${REPO}:${image}`);
    assert.equal(pushed.done, true);
    await assert.rejects(b.daemon.images.store.manifest(image)); // B does not have it
    const dst = join(sb.dir, "mnt");
    const imgB = new TaskImagesClient(b.client);
    await imgB.mount(taskB, dst, image);
    try {
      assert.deepEqual(
        await readTree(dst, { withTimes: true }),
        await readTree(join(sa.dir, "src"), { withTimes: true }),
      );
      // The same tree on both sides: B's snapshot of the mount is the same image id.
      assert.equal(await imgB.snapshotDirectory(taskB, dst), image);
    } finally {
      await imgB.unmount(taskB, dst);
    }
    const info = await new ImagesAdminClient(b.client).inspect(image);
    assert.match(info.image?.source ?? "", /^pull /);
  });

  it("an image pulled twice downloads once; a changed image fetches only its changed layer", async () => {
    const adminB = new ImagesAdminClient(b.client);
    await adminB.pull(image); // present already (previous test) or pulled now
    const before = await reg.blobGets();
    const again = await adminB.pull(image);
    assert.equal(again.blobsDone, 0);
    assert.equal(await reg.blobGets(), before, "no blob fetched for an image B has");
    // 3,000 files (several file layers); then one file changes: one layer is new.
    const many = join(sa.dir, "many");
    for (let d = 0; d < 30; d++) {
      await mkdir(join(many, `d${d}`), { recursive: true });
      for (let f = 0; f < 100; f++) await writeFile(join(many, `d${d}`, `f${f}`), `${d}/${f}\n`);
    }
    const snapA = new TaskImagesClient(a.client);
    const adminA = new ImagesAdminClient(a.client);
    const image3 = await snapA.snapshotDirectory(taskA, many);
    await adminA.push(image3);
    const first = await adminB.pull(image3);
    const m3 = await registryManifest(reg, image3);
    assert.ok(m3.layers.length > 3, `${m3.layers.length} layers`);
    assert.equal(first.blobsDone, m3.layers.length + 1); // file layers, config, manifest
    await writeFile(join(many, "d7", "f42"), "changed\n"); // the directory is unchanged
    const puts = await reg.blobPuts();
    const image4 = await snapA.snapshotDirectory(taskA, many);
    await adminA.push(image4);
    assert.equal((await reg.blobPuts()) - puts, 2, "one layer and the config uploaded");
    const m4 = await registryManifest(reg, image4);
    const old = new Set(m3.layers.map((l) => l.digest));
    const fresh = m4.layers.filter((l) => !old.has(l.digest));
    assert.equal(fresh.length, 1);
    const gets = await reg.blobGets();
    const r = await adminB.pull(image4);
    assert.equal(r.blobsSkipped, m4.layers.length - 1);
    assert.equal((await reg.blobGets()) - gets, 2, "the config and the changed layer");
    for (const l of m4.layers) {
      const tree = l === m4.layers.at(-1);
      assert.equal(await reg.blobGets(l.digest), tree ? 0 : 1, l.digest);
    }
  });

  it("skopeo inspect and skopeo copy accept a pushed image", async () => {
    await new ImagesAdminClient(a.client).push(image);
    const ref = `docker://${reg.host}/${REPO}:${image}`;
    const { stdout } = await run("skopeo", ["inspect", "--tls-verify=false", ref]);
    const doc = JSON.parse(stdout) as { Os: string; Layers: string[] };
    assert.equal(doc.Os, "linux");
    assert.ok(doc.Layers.length >= 2);
    const out = await mkdtemp(join(tmpdir(), "taskrouter-skopeo-"));
    try {
      await run("skopeo", ["copy", "--src-tls-verify=false", ref, `oci:${out}:copy`]);
      const copied = await run("skopeo", ["inspect", `oci:${out}:copy`]);
      // skopeo compresses layers for an oci: destination: as many, other digests.
      assert.equal(
        (JSON.parse(copied.stdout) as { Layers: string[] }).Layers.length,
        doc.Layers.length,
      );
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });

  it("an image the registry does not have is NOT_FOUND (pull, mount)", async () => {
    const missing = `im-${"0".repeat(32)}`;
    await rejectsKind(() => new ImagesAdminClient(b.client).pull(missing), "NotFound", /not found/);
    await rejectsKind(
      () => new TaskImagesClient(b.client).mount(taskB, join(sb.dir, "nothing"), missing),
      "NotFound",
    );
  });

  it("image push and image pull on the CLI", async () => {
    const push = await runCli(["image", "push", image, "--server", a.address]);
    assert.equal(push.code, 0, push.stderr);
    assert.equal(push.stdout, `${reg.host}/${REPO}:${image}\n`);
    assert.match(push.stderr, /^pushed im-/m);
    const pull = await runCli(["image", "pull", image, "--server", b.address]);
    assert.equal(pull.code, 0, pull.stderr);
    assert.equal(pull.stdout, `${reg.host}/${REPO}:${image}\n`);
  });
});

describe("a router without --registry", () => {
  let r: TestRouter;
  before(async () => {
    r = await startRouter();
  });
  after(async () => {
    await r?.close();
  });

  it("image push / pull are FAILED_PRECONDITION", async () => {
    const id = `im-${"1".repeat(32)}`;
    await rejectsKind(
      () => new ImagesAdminClient(r.client).push(id),
      "FailedPrecondition",
      /--registry/,
    );
    await rejectsKind(() => new ImagesAdminClient(r.client).pull(id), "FailedPrecondition");
  });
});

/** A tiny root filesystem: /bin/sh (dash) and /bin/cat with their libraries, /etc/marker. */
async function makeRootDir(root: string, marker: string): Promise<void> {
  const put = async (from: string, to: string) => {
    await mkdir(dirname(join(root, to)), { recursive: true });
    await copyFile(realpathSync(from), join(root, to));
    await chmod(join(root, to), 0o755);
  };
  for (const [bin, dest] of [
    ["/bin/dash", "/bin/sh"],
    ["/bin/cat", "/bin/cat"],
  ] as const) {
    await put(bin, dest);
    for (const line of execFileSync("ldd", [bin], { encoding: "utf8" }).split("\n")) {
      const lib = /=>\s*(\/\S+)/.exec(line)?.[1] ?? /^\s*(\/\S+)\s/.exec(line)?.[1];
      if (lib) await put(lib, lib);
    }
  }
  await mkdir(join(root, "etc"), { recursive: true });
  await writeFile(join(root, "etc", "marker"), marker);
  await mkdir(join(root, "tmp"));
  await chmod(join(root, "tmp"), 0o1777);
}

const runcSkip = skip ?? (await runcSkipReason());

describe("a runc task on B rooted on an image only A has", { skip: runcSkip }, () => {
  let reg: TestRegistry;
  let a: TestRouter;
  let b: TestRouter;
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskrouter-reg-root-"));
    reg = await startRegistry();
    a = await startRuncRouter(registryConfig(reg));
    b = await startRuncRouter(registryConfig(reg));
  });
  after(async () => {
    await b?.close();
    await a?.close();
    await reg?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("B pulls the image when the task is created and runs on it", async () => {
    const marker = "imported on router A\n";
    await makeRootDir(join(dir, "root"), marker);
    const adminA = new ImagesAdminClient(a.client);
    const image = await adminA.import(tarDirectory(join(dir, "root")), {
      format: "tree",
      source: "test",
    });
    await adminA.push(image);
    const t = await new TasksClient(b.client).create("", { runtime: "runc", image });
    const out = await runIn(b, t.taskId, ["sh", "-c", "cat /etc/marker"]);
    assert.deepEqual(out.status, { code: 0 }, out.stderr);
    assert.equal(out.stdout, marker);
    await new TasksClient(b.client).terminate(t.taskId);
  });
});
