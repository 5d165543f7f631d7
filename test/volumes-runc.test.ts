/**
 * Named volumes in containers (issue 12 part 7): tasks that mount one volume
 * share it (a file written by one task is read by the other, through execs
 * of the independent grpc-js + proto-loader stack), read-only mounts refuse
 * writes, `volume rm` is refused while mounted, bad requests create no task,
 * TaskReloadVolumes (PROTOCOL-LATER §3.5, §5.7), and a router restart that
 * keeps volumes and the tasks' mounts. Sharing runs on runc, crun and runsc
 * (each skipped with its reason when missing); the rest on runc.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdir, readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { Daemon } from "../src/daemon.ts";
import { AdminWire } from "./helpers/admin-wire.ts";
import { cliEnv, runCli } from "./helpers/cli-run.ts";
import type { TestRouter } from "./helpers/router.ts";
import {
  OCI_RUNTIMES,
  removeDataDir,
  runcSkipReason,
  startRuncDaemon,
  startRuncRouter,
  tempDataDir,
} from "./helpers/runc.ts";
import { expectStatus, FD, grpc, STDERR, STDOUT, WireClient } from "./helpers/wire-client.ts";

/** Runs `sh -c script` in `task_id`; its exit code, stdout and stderr. */
async function sh(w: WireClient, task_id: string, script: string) {
  const exec_id = randomUUID();
  await w.start({
    task_id,
    exec_id,
    command_args: ["sh", "-c", script],
    stdout_config: STDOUT.PIPE,
    stderr_config: STDERR.PIPE,
  });
  const exit = await w.wait(task_id, exec_id);
  const out = await w.readAll({ task_id, exec_id, file_descriptor: FD.STDOUT });
  const err = await w.readAll({ task_id, exec_id, file_descriptor: FD.STDERR });
  return { exit, stdout: out.data.toString(), stderr: err.data.toString() };
}

/** A task (CreateTask through proto-loader) with `volumes`; returns its id. */
async function taskWith(tasks: AdminWire, volumes: Record<string, unknown>[]): Promise<string> {
  const res = await tasks.call("CreateTask", { volumes });
  return (res.task as Record<string, unknown>).task_id as string;
}

const mountedBy = async (vols: AdminWire, name: string) => {
  const list = (await vols.call("ListVolumes", {})).volumes as Record<string, unknown>[];
  return list.find((v) => v.name === name)?.mounted_by;
};

for (const { label, binary } of OCI_RUNTIMES) {
  const skip = await runcSkipReason(binary);
  describe(`volumes shared by tasks (${label})`, { skip }, () => {
    let r: TestRouter;
    let w: WireClient;
    let vols: AdminWire;
    let tasks: AdminWire;
    before(async () => {
      r = await startRuncRouter({ ociRuntime: binary });
      w = new WireClient(r.address);
      vols = new AdminWire(r.address, "Volumes");
      tasks = new AdminWire(r.address, "Tasks");
    });
    after(async () => {
      w?.close();
      vols?.close();
      tasks?.close();
      await r?.close();
    });

    it("one task's writes are read by another; a read-only mount refuses writes", async () => {
      await vols.call("CreateVolume", { name: "shared" });
      const a = await taskWith(tasks, [{ name: "shared", path: "/data" }]);
      const b = await taskWith(tasks, [{ name: "shared", path: "/mnt/vol", read_only: true }]);
      let res = await sh(w, a, "echo hello > /data/f && mkdir /data/d && echo x > /data/d/g");
      assert.deepEqual(res.exit, { code: 0 }, res.stderr);
      res = await sh(w, b, "cat /mnt/vol/f /mnt/vol/d/g");
      assert.deepEqual(res, { exit: { code: 0 }, stdout: "hello\nx\n", stderr: "" });
      // A change after the other task read the file: seen at once (and after a reload).
      assert.deepEqual((await sh(w, a, "echo again >> /data/f")).exit, { code: 0 });
      assert.equal((await sh(w, b, "cat /mnt/vol/f")).stdout, "hello\nagain\n");
      await w.unary("TaskReloadVolumes", { task_id: b });
      assert.equal((await sh(w, b, "cat /mnt/vol/f")).stdout, "hello\nagain\n");
      res = await sh(w, b, "echo no > /mnt/vol/f; touch /mnt/vol/new");
      assert.notDeepEqual(res.exit, { code: 0 });
      assert.match(res.stderr, /read-only/i);
      // A shell glob, not ls: runsc's old gVisor fails ls's statx flags (EINVAL) on any directory.
      assert.equal(
        (await sh(w, a, "cat /data/f; echo /data/*")).stdout,
        "hello\nagain\n/data/d /data/f\n",
      );
      // Both tasks show their volumes; the volume lists both tasks.
      const got = (await tasks.call("GetTask", { task_id: b })).task as Record<string, unknown>;
      assert.deepEqual(got.volumes, [{ name: "shared", path: "/mnt/vol", read_only: true }]);
      assert.deepEqual(await mountedBy(vols, "shared"), [a, b].sort());
      await tasks.call("TerminateTask", { task_id: a });
      await tasks.call("TerminateTask", { task_id: b });
      await vols.call("DeleteVolume", { name: "shared" });
    });
  });
}

const runcSkip = await runcSkipReason("runc");

describe("volumes: requests, removal, reload (runc)", { skip: runcSkip }, () => {
  let r: TestRouter;
  let w: WireClient;
  let vols: AdminWire;
  let tasks: AdminWire;
  before(async () => {
    r = await startRuncRouter();
    w = new WireClient(r.address);
    vols = new AdminWire(r.address, "Volumes");
    tasks = new AdminWire(r.address, "Tasks");
    await vols.call("CreateVolume", { name: "v1" });
    await vols.call("CreateVolume", { name: "v2" });
  });
  after(async () => {
    w?.close();
    vols?.close();
    tasks?.close();
    await r?.close();
  });
  const bundles = () => readdir(join(r.dataDir, "runc", "bundles")).catch(() => []);

  it("an unknown volume is NOT_FOUND, bad mounts INVALID_ARGUMENT; no task is created", async () => {
    const tasksBefore = (await tasks.call("ListTasks", {})).tasks;
    const bundlesBefore = await bundles();
    const bad: [Record<string, unknown>[], grpc.status, RegExp][] = [
      [[{ name: "nope", path: "/data" }], grpc.status.NOT_FOUND, /volume "nope" not found/],
      [
        [
          { name: "v1", path: "/a" },
          { name: "v1", path: "/b" },
        ],
        grpc.status.INVALID_ARGUMENT,
        /v1 is mounted at two paths/,
      ],
      [
        [
          { name: "v1", path: "/a" },
          { name: "v2", path: "/a" },
        ],
        grpc.status.INVALID_ARGUMENT,
        /two volumes are mounted at "\/a"/,
      ],
      [[{ name: "v1", path: "data" }], grpc.status.INVALID_ARGUMENT, /absolute/],
      [[{ name: "v1", path: "/" }], grpc.status.INVALID_ARGUMENT, /root/],
      [[{ name: "v1", path: "/a/../etc" }], grpc.status.INVALID_ARGUMENT, /normalized/],
      [[{ name: "v1", path: "/data/" }], grpc.status.INVALID_ARGUMENT, /normalized/],
      [[{ name: "v1", path: "/proc/x" }], grpc.status.INVALID_ARGUMENT, /\/proc/],
      [[{ name: "v1", path: "/dev" }], grpc.status.INVALID_ARGUMENT, /\/dev/],
      [[{ name: "v1", path: "/a\nb" }], grpc.status.INVALID_ARGUMENT, /control/],
      [[{ name: "../v1", path: "/a" }], grpc.status.INVALID_ARGUMENT, /volume name/],
      [
        Array.from({ length: 33 }, (_, i) => ({ name: "v1", path: `/p${i}` })),
        grpc.status.INVALID_ARGUMENT,
        /at most 32/,
      ],
    ];
    for (const [volumes, code, re] of bad) {
      await expectStatus(tasks.call("CreateTask", { task_id: "bad", volumes }), code, re);
    }
    assert.deepEqual((await tasks.call("ListTasks", {})).tasks, tasksBefore);
    assert.deepEqual(await bundles(), bundlesBefore);
    assert.deepEqual(await mountedBy(vols, "v1"), []);
    assert.deepEqual(await mountedBy(vols, "v2"), []);
  });

  it("volume rm is FAILED_PRECONDITION while a task mounts it, OK once it is gone", async () => {
    const t = await taskWith(tasks, [{ name: "v2", path: "/srv/v2" }]);
    await expectStatus(
      vols.call("DeleteVolume", { name: "v2" }),
      grpc.status.FAILED_PRECONDITION,
      new RegExp(`mounted by task ${t}`),
    );
    assert.deepEqual((await sh(w, t, "echo still > /srv/v2/f && cat /srv/v2/f")).stdout, "still\n");
    await tasks.call("TerminateTask", { task_id: t });
    await vols.call("DeleteVolume", { name: "v2" });
    await expectStatus(vols.call("DeleteVolume", { name: "v2" }), grpc.status.NOT_FOUND);
  });

  it("CLI: task create --volume, task ls and volume ls show the mount", async () => {
    const cli = (...args: string[]) => runCli([...args, "--server", r.address], cliEnv());
    await vols.call("CreateVolume", { name: "v3" });
    let res = await cli("task", "create", "--volume", "v1:/cli/v:ro", "--volume", "v3:/w");
    assert.equal(res.code, 0, res.stderr);
    const id = res.stdout.trim();
    res = await cli("task", "ls");
    const row = res.stdout.split("\n").find((l) => l.startsWith(`${id} `)) ?? "";
    assert.match(row, / v1:\/cli\/v:ro,v3:\/w$/);
    res = await cli("volume", "ls");
    assert.match(res.stdout, new RegExp(`\\nv1 .* ${id}\\n`));
    assert.equal((await sh(w, id, "echo cli > /w/f; cat /w/f")).stdout, "cli\n");
    await tasks.call("TerminateTask", { task_id: id });
    assert.match((await cli("volume", "ls")).stdout, /\nv1 .* -\n/);
  });

  it("TaskReloadVolumes: OK; NOT_FOUND for an unknown task or container id", async () => {
    const t = await taskWith(tasks, [
      { name: "v1", path: "/data" },
      { name: "v1-not", path: "/x" },
    ]).catch(() => "");
    assert.equal(t, "", "an unknown second volume fails the whole create");
    assert.deepEqual(await mountedBy(vols, "v1"), []);
    const task = await taskWith(tasks, [{ name: "v1", path: "/data" }]);
    const plain = await taskWith(tasks, []);
    const reload = (req: Record<string, unknown>) =>
      w.unary("TaskReloadVolumes", req, { deadlineMs: 55_000 });
    assert.deepEqual(await reload({ task_id: task }), {});
    assert.deepEqual(await reload({ task_id: task, container_id: "" }), {});
    assert.deepEqual(await reload({ task_id: plain }), {});
    await expectStatus(reload({ task_id: "no-such-task" }), grpc.status.NOT_FOUND, /not found/);
    await expectStatus(reload({ task_id: "" }), grpc.status.INVALID_ARGUMENT);
    await expectStatus(
      reload({ task_id: task, container_id: "ctr-1" }),
      grpc.status.NOT_FOUND,
      /container "ctr-1" not found/,
    );
    // The volume's directory replaced behind the router's back: the task's mount cannot show it.
    const dir = join(r.dataDir, "volumes", "local", "v1");
    await rename(dir, `${dir}.moved`);
    await mkdir(dir);
    try {
      await expectStatus(
        reload({ task_id: task }),
        grpc.status.FAILED_PRECONDITION,
        /volume v1: its directory was removed or replaced/,
      );
    } finally {
      await rm(dir, { recursive: true });
      await rename(`${dir}.moved`, dir);
    }
    assert.deepEqual(await reload({ task_id: task }), {});
    await tasks.call("TerminateTask", { task_id: task });
    await expectStatus(reload({ task_id: task }), grpc.status.FAILED_PRECONDITION, /not running/);
    await tasks.call("TerminateTask", { task_id: plain });
  });
});

describe("volumes across a router restart (runc)", { skip: runcSkip }, () => {
  let dataDir: string;
  let d: Daemon | undefined;
  before(async () => {
    dataDir = await tempDataDir();
  });
  after(async () => {
    await d?.close();
    await removeDataDir(dataDir);
  });

  it("the volume, its files and the task's mount survive; rm stays refused", async () => {
    d = await startRuncDaemon(dataDir);
    let w = new WireClient(d.address);
    let vols = new AdminWire(d.address, "Volumes");
    let tasks = new AdminWire(d.address, "Tasks");
    const t = await taskWith(tasks, []).then(async (plain) => {
      await tasks.call("TerminateTask", { task_id: plain });
      await vols.call("CreateVolume", { name: "kept" });
      return taskWith(tasks, [{ name: "kept", path: "/kept", read_only: false }]);
    });
    assert.deepEqual((await sh(w, t, "echo before > /kept/f")).exit, { code: 0 });
    w.close();
    vols.close();
    tasks.close();
    await d.close(); // the task's container keeps running
    d = await startRuncDaemon(dataDir);
    w = new WireClient(d.address);
    vols = new AdminWire(d.address, "Volumes");
    tasks = new AdminWire(d.address, "Tasks");
    try {
      assert.deepEqual(await mountedBy(vols, "kept"), [t]);
      const got = (await tasks.call("GetTask", { task_id: t })).task as Record<string, unknown>;
      assert.deepEqual(got.volumes, [{ name: "kept", path: "/kept", read_only: false }]);
      await expectStatus(
        vols.call("DeleteVolume", { name: "kept" }),
        grpc.status.FAILED_PRECONDITION,
      );
      assert.deepEqual(await w.unary("TaskReloadVolumes", { task_id: t }), {});
      // The adopted task and a new one share the volume.
      const n = await taskWith(tasks, [{ name: "kept", path: "/k" }]);
      assert.equal((await sh(w, n, "cat /k/f; echo after >> /k/f")).stdout, "before\n");
      assert.equal((await sh(w, t, "cat /kept/f")).stdout, "before\nafter\n");
      await tasks.call("TerminateTask", { task_id: t });
      await tasks.call("TerminateTask", { task_id: n });
      await vols.call("DeleteVolume", { name: "kept" });
    } finally {
      w.close();
      vols.close();
      tasks.close();
    }
  });
});
