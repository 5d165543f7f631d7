import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { TaskImagesClient } from "../src/client/images.ts";
import { taskFsLookup } from "../src/images/task-fs.ts";
import type { RuncRuntime } from "../src/runtime/runc/runc-runtime.ts";
import { rejectsKind } from "./helpers/images.ts";
import type { TestRouter } from "./helpers/router.ts";
import { OCI_RUNTIMES, runcSkipReason, runIn, startRuncRouter } from "./helpers/runc.ts";

const skip = await runcSkipReason();

/** The freezer state of a runc task's cgroup ("THAWED", "FROZEN", or "0"/"1" on cgroup v2). */
function freezerState(r: TestRouter, task: string): string | undefined {
  const rt = r.daemon.tasks.get(task).runtime as RuncRuntime;
  const path = rt.cgroupsPath(task);
  for (const f of [
    join("/sys/fs/cgroup/freezer", path, "freezer.state"),
    join("/sys/fs/cgroup", path, "cgroup.freeze"),
  ]) {
    if (existsSync(f)) return readFileSync(f, "utf8").trim();
  }
  return undefined;
}

describe("images in runc tasks", { skip }, () => {
  let r: TestRouter;
  let images: TaskImagesClient;
  let a: string;
  let b: string;
  const tag = randomBytes(6).toString("hex");

  before(async () => {
    r = await startRuncRouter();
    images = new TaskImagesClient(r.client);
    a = await r.newTask();
    b = await r.newTask();
  });
  after(async () => {
    await r?.close();
  });

  it("snapshots a directory of one task and mounts it in another, where the task sees it", async () => {
    const made = await runIn(r, a, [
      "sh",
      "-c",
      "mkdir -p /root/src/empty /root/src/sub && echo hello > /root/src/hello && ln -s hello /root/src/link && chmod 600 /root/src/hello",
    ]);
    assert.deepEqual(made.status, { code: 0 }, made.stderr);
    const id = await images.snapshotDirectory(a, "/root/src");
    assert.match(freezerState(r, a) ?? "", /^(THAWED|0)$/);
    await images.mount(b, "/mnt/data", id);
    const seen = await runIn(r, b, [
      "sh",
      "-c",
      "cat /mnt/data/hello; readlink /mnt/data/link; stat -c %a /mnt/data/hello; ls -A /mnt/data",
    ]);
    assert.deepEqual(seen.status, { code: 0 }, seen.stderr);
    assert.equal(seen.stdout, "hello\nhello\n600\nempty\nhello\nlink\nsub\n");
    // Writes in the task go to the mount's layer and show up in its next snapshot.
    const wrote = await runIn(r, b, [
      "sh",
      "-c",
      "echo more > /mnt/data/more && rm /mnt/data/link",
    ]);
    assert.deepEqual(wrote.status, { code: 0 }, wrote.stderr);
    const next = await images.snapshotDirectory(b, "/mnt/data");
    const paths = (await r.daemon.images.inspect(next)).manifest.entries.map((e) => e.path);
    assert.deepEqual(paths, ["", "empty", "hello", "more", "sub"]);
    assert.match(freezerState(r, b) ?? "", /^(THAWED|0)$/);
    await images.unmount(b, "/mnt/data");
    const gone = await runIn(r, b, ["sh", "-c", "ls -A /mnt/data"]);
    assert.equal(gone.stdout, "");
  });

  it("symlinks a task plants resolve inside its root: nothing is written on the host", async () => {
    const planted = await runIn(r, a, [
      "sh",
      "-c",
      "mkdir -p /mnt && ln -sfn / /mnt/x && ln -sfn ../../../../.. /mnt/up && ln -sfn /tmp /mnt/t",
    ]);
    assert.deepEqual(planted.status, { code: 0 }, planted.stderr);
    await rejectsKind(() => images.mount(a, "/mnt/x", ""), "InvalidArgument", /root/);
    await rejectsKind(() => images.mount(a, "/mnt/up", ""), "InvalidArgument", /root/);
    await rejectsKind(() => images.snapshotDirectory(a, "/mnt/up"), "InvalidArgument", /root/);
    const name = `taskrouter-runc-escape-${tag}`;
    await images.mount(a, `/mnt/x/tmp/${name}`, "");
    await images.mount(a, `/mnt/up/${name}`, "");
    assert.equal(existsSync(`/tmp/${name}`), false);
    assert.equal(existsSync(`/${name}`), false);
    const inside = await runIn(r, a, [
      "sh",
      "-c",
      `test -d /tmp/${name} && test -d /${name} && echo ok`,
    ]);
    assert.equal(inside.stdout, "ok\n");
    await images.unmount(a, `/mnt/t/${name}`); // the same directory, reached through another link
    await images.unmount(a, `/${name}`);
    assert.equal(r.daemon.images.mounts.list(a).length, 0);
  });

  it("the task's freeze hook freezes its processes, and thaw lets them run again", async () => {
    const fs = taskFsLookup(r.daemon.tasks, r.dataDir)(a);
    assert.ok(fs.freeze, "runc tasks can be frozen");
    const thaw = await fs.freeze();
    try {
      assert.match(freezerState(r, a) ?? "", /^(FROZEN|1)$/);
    } finally {
      await thaw();
    }
    assert.match(freezerState(r, a) ?? "", /^(THAWED|0)$/);
    assert.equal((await runIn(r, a, ["echo", "ran"])).stdout, "ran\n");
  });

  it("thaws the task when a snapshot fails after freezing it", async () => {
    const rt = r.daemon.tasks.get(a).runtime as RuncRuntime;
    const dir = join(rt.rootfs(a), "root", "withdev");
    execFileSync("mkdir", ["-p", dir]);
    execFileSync("mknod", [join(dir, "null"), "c", "1", "3"]);
    await rejectsKind(
      () => images.snapshotDirectory(a, "/root/withdev"),
      "FailedPrecondition",
      /device/,
    );
    assert.match(freezerState(r, a) ?? "", /^(THAWED|0)$/);
    const alive = await runIn(r, a, ["echo", "alive"]);
    assert.equal(alive.stdout, "alive\n");
  });

  it("TaskSnapshotFilesystem: FAILED_PRECONDITION on host tasks", async () => {
    const host = (await r.tasks.create("", { runtime: "host" })).taskId;
    await rejectsKind(() => images.snapshotFilesystem(host), "FailedPrecondition", /host runtime/);
    await r.tasks.terminate(host);
  });

  it("task teardown removes the task's mounts before its root goes", async () => {
    const t = await r.newTask();
    await images.mount(t, "/mnt/one", "");
    await images.mount(t, "/mnt/one/two", "");
    assert.equal(r.daemon.images.mounts.list(t).length, 2);
    await r.tasks.terminate(t);
    assert.equal(r.daemon.images.mounts.list(t).length, 0);
  });
});

// Mounts into running tasks with every OCI runtime: runc propagates them into the task,
// crun does not (the router places them in the task's mount namespace instead).
for (const { label, binary } of OCI_RUNTIMES) {
  describe(`image mounts in a running task (${label})`, {
    skip: await runcSkipReason(binary),
  }, () => {
    let r: TestRouter;
    let images: TaskImagesClient;
    before(async () => {
      r = await startRuncRouter({ ociRuntime: binary });
      images = new TaskImagesClient(r.client);
    });
    after(async () => {
      await r?.close();
    });

    it("the task sees a mount at once, nested and replaced ones too; unmount brings back what it hid", async () => {
      const t = await r.newTask();
      const prep = await runIn(r, t, [
        "sh",
        "-c",
        "mkdir -p /srv/img /mnt/x && echo image > /srv/img/f && echo hidden > /mnt/x/f",
      ]);
      assert.deepEqual(prep.status, { code: 0 }, prep.stderr);
      const image = await images.snapshotDirectory(t, "/srv/img");
      const look = async () => {
        const res = await runIn(r, t, [
          "sh",
          "-c",
          // Shell globs, not ls: runsc's gVisor fails coreutils' statx calls.
          'cat /mnt/x/f 2>&1; for f in /mnt/x/* /mnt/x/.[!.]*; do [ -e "$f" ] && printf \'%s \' "$(basename "$f")"; done; true',
        ]);
        assert.deepEqual(res.status, { code: 0 }, res.stderr);
        return res.stdout;
      };

      await images.mount(t, "/mnt/x", image);
      assert.equal(await look(), "image\nf ");
      await images.mount(t, "/mnt/x/sub", "");
      const nested = await runIn(r, t, ["sh", "-c", "touch /mnt/x/sub/new && echo /mnt/x/sub/*"]);
      assert.equal(nested.stdout, "/mnt/x/sub/new\n", nested.stderr);
      await images.mount(t, "/mnt/x", ""); // replaces the image mount (and what was below it)
      assert.equal(await look(), "cat: /mnt/x/f: No such file or directory\n");
      await images.unmount(t, "/mnt/x");
      assert.equal(await look(), "hidden\nf ");
      assert.equal(r.daemon.images.mounts.list(t).length, 0);
      // The same unmount again at once, as a replay of it would come (its answer lost): OK.
      await images.unmount(t, "/mnt/x");
      assert.equal(await look(), "hidden\nf ");
      // A directory nothing was unmounted from: NotFound.
      await rejectsKind(() => images.unmount(t, "/mnt"), "NotFound", /no directory is mounted/);
      await r.tasks.terminate(t);
    });
  });
}
