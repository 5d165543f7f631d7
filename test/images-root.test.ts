import assert from "node:assert/strict";
import { existsSync, readFileSync, statSync } from "node:fs";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { tarDirectory } from "../src/cli/tar-dir.ts";
import { TasksClient } from "../src/client/admin.ts";
import { RouterClient } from "../src/client/client.ts";
import { ImagesAdminClient, TaskImagesClient } from "../src/client/images.ts";
import { nativeHelper } from "../src/runtime/native.ts";
import { mountsUnder } from "../src/runtime/runc/mounts.ts";
import type { RuncRuntime } from "../src/runtime/runc/runc-runtime.ts";
import { runCli } from "./helpers/cli-run.ts";
import { copyProgram, rejectsKind, scratch } from "./helpers/images.ts";
import type { TestRouter } from "./helpers/router.ts";
import {
  initPid,
  removeDataDir,
  runcSkipReason,
  runIn,
  startRuncDaemon,
  startRuncRouter,
  tempDataDir,
} from "./helpers/runc.ts";

const skip = await runcSkipReason();
const MARKER = "made for the image-root test\n";

/** A tiny root filesystem: /bin/sh (dash), /bin/cat, their libraries, /etc/marker, /tmp. */
async function makeImageDir(dir: string): Promise<void> {
  await copyProgram(dir, "/bin/dash", "/bin/sh");
  await copyProgram(dir, "/bin/cat", "/bin/cat");
  await mkdir(join(dir, "etc"), { recursive: true });
  await writeFile(join(dir, "etc", "marker"), MARKER);
  await mkdir(join(dir, "tmp"));
  await chmod(join(dir, "tmp"), 0o1777);
}

describe("an imported image as the root of a runc task", { skip }, () => {
  let r: TestRouter;
  let tasks: TasksClient;
  let admin: ImagesAdminClient;
  let s: Awaited<ReturnType<typeof scratch>>;
  let image: string;

  before(async () => {
    s = await scratch();
    r = await startRuncRouter();
    tasks = new TasksClient(r.client);
    admin = new ImagesAdminClient(r.client);
    const tree = join(s.dir, "tree");
    await makeImageDir(tree);
    image = await admin.import(tarDirectory(tree), { format: "tree", source: "test" });
  });
  after(async () => {
    await r?.close();
    await s?.cleanup();
  });

  it("runs commands on the image's files only, without perl, exit code and signal told apart", async () => {
    const t = await tasks.create("", { runtime: "runc", image });
    assert.equal(t.image, image);
    assert.equal((await tasks.get(t.taskId)).image, image);
    assert.equal(t.defaultWorkdir, "/");
    const out = await runIn(r, t.taskId, ["sh", "-c", "cat /etc/marker; exit 3"]);
    assert.deepEqual(out.status, { code: 3 }, out.stderr);
    assert.equal(out.stdout, MARKER);
    const absent = await runIn(r, t.taskId, [
      "sh",
      "-c",
      "test -e /usr/bin/perl || echo noperl; test -e /etc/passwd || echo nopasswd",
    ]);
    assert.equal(absent.stdout, "noperl\nnopasswd\n", absent.stderr);
    const missing = await runIn(r, t.taskId, ["no-such-program"]);
    assert.deepEqual(missing.status, { code: 127 });
    const killed = await runIn(r, t.taskId, ["sh", "-c", "kill -9 $$"]);
    assert.deepEqual(killed.status, { signal: 9 }, killed.stderr);
    const exited = await runIn(r, t.taskId, ["sh", "-c", "exit 137"]);
    assert.deepEqual(exited.status, { code: 137 }, exited.stderr);
    await tasks.terminate(t.taskId);
  });

  it("writes stay in the task; a filesystem snapshot of it roots another task", async () => {
    const t = await tasks.create("", { runtime: "runc", image });
    const rt = r.daemon.tasks.get(t.taskId).runtime as RuncRuntime;
    const bundle = dirname(rt.rootfs(t.taskId));
    const w = await runIn(r, t.taskId, [
      "sh",
      "-c",
      "echo changed > /etc/marker; echo new > /tmp/n",
    ]);
    assert.deepEqual(w.status, { code: 0 }, w.stderr);
    const unpacked = join(r.daemon.images.store.unpackedDir, image);
    assert.equal(readFileSync(join(unpacked, "etc", "marker"), "utf8"), MARKER);
    assert.equal(existsSync(join(unpacked, "tmp", "n")), false);
    assert.deepEqual(rt.rootLayers(t.taskId), {
      imageId: image,
      upper: join(bundle, "upper", "_root"),
    });
    const snap = await new TaskImagesClient(r.client).snapshotFilesystem(t.taskId);
    const t2 = await tasks.create("", { runtime: "runc", image: snap });
    const seen = await runIn(r, t2.taskId, ["sh", "-c", "cat /etc/marker /tmp/n"]);
    assert.equal(seen.stdout, "changed\nnew\n", seen.stderr);
    await tasks.terminate(t2.taskId);

    // In use: the image cannot be removed; once the task is gone it can.
    await rejectsKind(() => admin.delete(image), "FailedPrecondition", /in use/);
    await tasks.terminate(t.taskId);
    assert.equal(existsSync(bundle), false);
    assert.deepEqual(await mountsUnder(bundle), []);
    assert.equal(r.daemon.images.store.usersOf(image), 0);
    await admin.delete(snap);
  });

  it("task create --image ID (CLI) makes an image-rooted task", async () => {
    const res = await runCli([
      "--server",
      r.address,
      "task",
      "create",
      "--id",
      "cli-rooted",
      "--image",
      image,
    ]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout, "cli-rooted\n");
    assert.equal(r.daemon.tasks.get("cli-rooted").spec.image, image);
    const out = await runIn(r, "cli-rooted", ["cat", "/etc/marker"]);
    assert.equal(out.stdout, MARKER, out.stderr);
    await tasks.terminate("cli-rooted");
  });

  it("refuses an unknown image, an image on a host task, and an image without /bin/sh", async () => {
    const unknown = `im-${"0".repeat(32)}`;
    await rejectsKind(
      () => tasks.create("t-unknown", { runtime: "runc", image: unknown }),
      "NotFound",
    );
    assert.equal(existsSync(join(r.dataDir, "runc", "bundles", "t-unknown")), false);
    await rejectsKind(
      () => tasks.create("", { runtime: "host", image }),
      "InvalidArgument",
      /images as task roots need the runc runtime/,
    );
    const bare = join(s.dir, "bare");
    await mkdir(join(bare, "etc"), { recursive: true });
    await writeFile(join(bare, "etc", "marker"), MARKER);
    const noShell = await admin.import(tarDirectory(bare), { format: "tree", source: "test" });
    await rejectsKind(
      () => tasks.create("t-nosh", { runtime: "runc", image: noShell }),
      "FailedPrecondition",
      /no \/bin\/sh/,
    );
    assert.equal(existsSync(join(r.dataDir, "runc", "bundles", "t-nosh")), false);
    assert.equal(r.daemon.images.store.usersOf(noShell), 0);
    assert.deepEqual(
      (await tasks.list()).map((t) => t.taskId),
      [],
    );
  });

  it("a task can neither move nor change /.taskrouter: the agent it gets is always ours", async () => {
    const tree = join(s.dir, "tree-mv");
    await makeImageDir(tree);
    for (const p of ["mv", "rm", "mkdir"]) await copyProgram(tree, `/bin/${p}`, `/bin/${p}`);
    const img = await admin.import(tarDirectory(tree), { format: "tree", source: "test" });
    const t = await tasks.create("", { runtime: "runc", image: img });
    const tries = await runIn(r, t.taskId, [
      "sh",
      "-c",
      [
        "mv /.taskrouter /tr-old 2>/dev/null; echo mv=$?",
        "rm -f /.taskrouter/agent 2>/dev/null; echo rm=$?",
        "(echo x > /.taskrouter/agent) 2>/dev/null; echo overwrite=$?",
        "(echo x > /.taskrouter/new) 2>/dev/null; echo add=$?",
        "mkdir /.taskrouter/d 2>/dev/null; echo mkdir=$?",
      ].join("; "),
    ]);
    assert.deepEqual(tries.status, { code: 0 }, tries.stderr);
    for (const line of tries.stdout.trim().split("\n"))
      assert.doesNotMatch(line, /=0$/, tries.stdout);
    // The agent runs our binary; killed, the next exec starts it again from the same file.
    const ours = statSync(nativeHelper("taskrouter-agent"));
    const init = await initPid(r, t.taskId);
    const agentOf = () => {
      const kids = readFileSync(`/proc/${init}/task/${init}/children`, "utf8");
      const pids = kids.trim().split(" ").map(Number);
      const cmdline = (p: number) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, "latin1");
        } catch {
          return ""; // a child of the init that ended meanwhile
        }
      };
      const agent = pids.find((p) => cmdline(p).startsWith("/.taskrouter/agent\0"));
      assert.ok(agent, `no agent among the init's children ${pids.join(" ")}`);
      return agent;
    };
    const first = agentOf();
    const exe = statSync(`/proc/${first}/exe`);
    assert.deepEqual([exe.dev, exe.ino], [ours.dev, ours.ino]);
    process.kill(first, "SIGKILL");
    const again = await runIn(r, t.taskId, ["cat", "/etc/marker"]);
    assert.equal(again.stdout, MARKER, again.stderr);
    const second = agentOf();
    assert.notEqual(second, first);
    const exe2 = statSync(`/proc/${second}/exe`);
    assert.deepEqual([exe2.dev, exe2.ino], [ours.dev, ours.ino]);
    await tasks.terminate(t.taskId);
    await admin.delete(img);
  });
});

describe("an image-rooted runc task across a router restart", { skip }, () => {
  let dataDir: string;
  let s: Awaited<ReturnType<typeof scratch>>;
  before(async () => {
    s = await scratch();
    dataDir = await tempDataDir();
  });
  after(async () => {
    if (dataDir) await removeDataDir(dataDir);
    await s?.cleanup();
  });

  it("is adopted with its image held again", async () => {
    const tree = join(s.dir, "tree");
    await makeImageDir(tree);
    const d1 = await startRuncDaemon(dataDir);
    let image: string;
    try {
      image = await d1.images.importStream(tarDirectory(tree), { format: "tree", source: "test" });
      await d1.tasks.create("rooted", { runtime: "runc", spec: { image } });
      assert.equal(d1.images.store.usersOf(image), 1);
    } finally {
      await d1.close();
    }
    const d2 = await startRuncDaemon(dataDir);
    const c = new RouterClient(d2.address);
    try {
      assert.equal(d2.tasks.get("rooted").spec.image, image);
      assert.equal(d2.images.store.usersOf(image), 1);
      await rejectsKind(() => d2.images.delete(image), "FailedPrecondition", /in use/);
      const out = await runIn({ client: c }, "rooted", ["sh", "-c", "cat /etc/marker; exit 4"]);
      assert.deepEqual(out.status, { code: 4 }, out.stderr);
      assert.equal(out.stdout, MARKER);
      await d2.tasks.terminate("rooted");
      assert.equal(d2.images.store.usersOf(image), 0);
      await d2.images.delete(image);
    } finally {
      c.close();
      await d2.close();
    }
  });
});
