/**
 * Sidecars with volumes (issue 12: parts 4 and 7 joined) through the
 * independent grpc-js + proto-loader stack, on runc:
 * TaskContainerCreate.volume_mounts (sharing with the main container both
 * ways, read_only, sub_path and its refused escapes, unknown volumes,
 * malformed mounts creating nothing), `volume rm` refused while a sidecar
 * mounts the volume and allowed once the sidecar ended (Terminate, or its
 * entrypoint exited) or its task was removed, TaskReloadVolumes with a
 * sidecar's container_id, and a router restart keeping the sidecar's hold.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { tarDirectory } from "../src/cli/tar-dir.ts";
import { RouterClient } from "../src/client/client.ts";
import { ImagesAdminClient } from "../src/client/images.ts";
import type { Daemon } from "../src/daemon.ts";
import { mountsUnder } from "../src/runtime/runc/mounts.ts";
import { AdminWire } from "./helpers/admin-wire.ts";
import { removeDataDir, runcSkipReason, startRuncDaemon, tempDataDir } from "./helpers/runc.ts";
import { type SidecarSuite, startSidecarSuite } from "./helpers/sidecar-image.ts";
import { expectStatus, FD, grpc, STDERR, STDOUT, WireClient } from "./helpers/wire-client.ts";

const SUCCESS = 1;
const FOREVER = ["sh", "-c", "while :; do sleep 1; done"];

/** Runs `sh -c script` in `task_id` (in sidecar `container_id` when given): exit, stdout, stderr. */
async function sh(w: WireClient, task_id: string, script: string, container_id = "") {
  const exec_id = randomUUID();
  await w.start({
    task_id,
    exec_id,
    command_args: ["sh", "-c", script],
    container_id,
    stdout_config: STDOUT.PIPE,
    stderr_config: STDERR.PIPE,
  } as never);
  const exit = await w.wait(task_id, exec_id);
  const out = await w.readAll({ task_id, exec_id, file_descriptor: FD.STDOUT });
  const err = await w.readAll({ task_id, exec_id, file_descriptor: FD.STDERR });
  return { exit, stdout: out.data.toString(), stderr: err.data.toString() };
}

const ok = { code: 0 };

const skip = await runcSkipReason("runc");

describe("sidecar volume mounts (runc)", { skip }, () => {
  let f: SidecarSuite;
  let vols: AdminWire;
  let tasks: AdminWire;
  /** A task mounting volume `shared` at /data. */
  let task: string;
  before(async () => {
    f = await startSidecarSuite("runc");
    vols = new AdminWire(f.r.address, "Volumes");
    tasks = new AdminWire(f.r.address, "Tasks");
    await vols.call("CreateVolume", { name: "shared" });
    const res = await tasks.call("CreateTask", { volumes: [{ name: "shared", path: "/data" }] });
    task = (res.task as Record<string, unknown>).task_id as string;
  });
  after(async () => {
    vols?.close();
    tasks?.close();
    await f?.close();
  });

  const create = (req: Record<string, unknown>, task_id = task) =>
    f.w.unary("TaskContainerCreate", { task_id, image_id: f.image, args: FOREVER, ...req });
  const mountedBy = async (name: string) => {
    const list = (await vols.call("ListVolumes", {})).volumes as Record<string, unknown>[];
    return list.find((v) => v.name === name)?.mounted_by;
  };
  const containerCount = async (task_id = task) =>
    ((await f.w.unary("TaskContainerList", { task_id, include_terminated: true })).containers as [])
      .length;

  it("a sidecar and the main container see each other's writes; read_only refuses writes", async () => {
    const { w } = f;
    const side = await create({
      container_name: "rw",
      // The JS SDK always sends allow_background_commits: a no-op for a local volume.
      volume_mounts: [{ volume_id: "shared", mount_path: "/vol", allow_background_commits: true }],
    });
    const id = side.container_id as string;
    assert.deepEqual((await sh(w, task, "echo from-task > /data/t")).exit, ok);
    assert.deepEqual(await sh(w, task, "cat /vol/t", id), {
      exit: ok,
      stdout: "from-task\n",
      stderr: "",
    });
    assert.deepEqual((await sh(w, task, "echo from-sidecar > /vol/s", id)).exit, ok);
    assert.equal((await sh(w, task, "cat /data/s")).stdout, "from-sidecar\n");
    // The sidecar's own image is still its root (its marker), the volume only at /vol.
    assert.equal((await sh(w, task, "cat /etc/marker", id)).stdout, "sidecar image\n");
    // The staged sources are gone from this machine once the sidecar runs: only its root is mounted.
    const dir = join(f.r.dataDir, "runc", "bundles", task, "sidecars", id);
    assert.deepEqual(await mountsUnder(dir), [join(dir, "rootfs")]);
    // A replay of the identical request is the same sidecar; other mounts under its name conflict.
    const again = await create({
      container_name: "rw",
      volume_mounts: [{ volume_id: "shared", mount_path: "/vol", allow_background_commits: true }],
    });
    assert.equal(again.container_id, id);
    await expectStatus(
      create({
        container_name: "rw",
        volume_mounts: [{ volume_id: "shared", mount_path: "/vol", read_only: true }],
      }),
      grpc.status.ALREADY_EXISTS,
    );

    const ro = await create({
      container_name: "ro",
      volume_mounts: [{ volume_id: "shared", mount_path: "/mnt/ro", read_only: true }],
    });
    const roId = ro.container_id as string;
    const res = await sh(w, task, "cat /mnt/ro/t; echo no > /mnt/ro/t; echo x > /mnt/ro/new", roId);
    assert.equal(res.stdout, "from-task\n");
    assert.notDeepEqual(res.exit, ok);
    assert.match(res.stderr, /read-only/i);
    assert.equal(
      (await sh(w, task, "cat /data/t; test -e /data/new || echo absent")).stdout,
      "from-task\nabsent\n",
    );
    assert.deepEqual(await mountedBy("shared"), [task]);
    for (const c of [id, roId])
      await w.unary("TaskContainerTerminate", { task_id: task, container_id: c });
  });

  it("sub_path mounts a directory of the volume; escapes and symlinks are refused", async () => {
    const { w } = f;
    const setup =
      "mkdir -p /data/sub/dir && echo inner > /data/sub/dir/f && ln -s / /data/esc && ln -s .. /data/sub/up && mkdir /data/sub/real";
    assert.deepEqual((await sh(w, task, setup)).exit, ok);
    const side = await create({
      container_name: "sub",
      volume_mounts: [{ volume_id: "shared", mount_path: "/s", sub_path: "sub/dir" }],
    });
    const id = side.container_id as string;
    assert.deepEqual(await sh(w, task, "cat /s/f; echo out > /s/g", id), {
      exit: ok,
      stdout: "inner\n",
      stderr: "",
    });
    assert.equal((await sh(w, task, "cat /data/sub/dir/g")).stdout, "out\n");
    await w.unary("TaskContainerTerminate", { task_id: task, container_id: id });

    const before = await containerCount();
    const mount = (sub_path: string) => ({
      container_name: "bad",
      volume_mounts: [{ volume_id: "shared", mount_path: "/s", sub_path }],
    });
    const invalid = ["../x", "..", "sub/../sub", "/etc", "sub//dir", "sub/", ".", "a\nb"];
    for (const p of invalid) {
      await expectStatus(create(mount(p)), grpc.status.INVALID_ARGUMENT, /sub_path/);
    }
    const refused: [string, RegExp][] = [
      ["esc", /symbolic link/],
      ["sub/up", /symbolic link/],
      ["sub/up/etc", /symbolic link/],
      ["nope", /does not exist/],
      ["sub/dir/f", /not a directory/],
    ];
    for (const [p, re] of refused) {
      await expectStatus(create(mount(p)), grpc.status.FAILED_PRECONDITION, re);
    }
    assert.equal(await containerCount(), before);
    // Nothing of the refused ones holds the volume (only the task does).
    assert.deepEqual(await mountedBy("shared"), [task]);
    // "" is the volume's root.
    const root = await create({
      container_name: "root",
      volume_mounts: [{ volume_id: "shared", mount_path: "/r", sub_path: "" }],
    });
    assert.equal(
      (await sh(w, task, "cat /r/t", root.container_id as string)).stdout,
      "from-task\n",
    );
    await w.unary("TaskContainerTerminate", { task_id: task, container_id: root.container_id });
  });

  it("unknown volumes are NOT_FOUND, malformed mounts INVALID_ARGUMENT; nothing is created", async () => {
    const before = await containerCount();
    await vols.call("CreateVolume", { name: "other" });
    const v = (volume_id: string, mount_path: string, extra = {}) => ({
      volume_id,
      mount_path,
      ...extra,
    });
    const cases: [Record<string, unknown>[], grpc.status, RegExp][] = [
      [[v("nope", "/v")], grpc.status.NOT_FOUND, /volume "nope" not found/],
      // A known volume before the unknown one is not held either.
      [[v("other", "/a"), v("nope", "/b")], grpc.status.NOT_FOUND, /not found/],
      [[v("shared", "/a"), v("shared", "/b")], grpc.status.INVALID_ARGUMENT, /two paths/],
      [[v("shared", "/a"), v("other", "/a")], grpc.status.INVALID_ARGUMENT, /two volumes/],
      [[v("shared", "rel")], grpc.status.INVALID_ARGUMENT, /absolute/],
      [[v("shared", "/proc/x")], grpc.status.INVALID_ARGUMENT, /\/proc/],
      [[v("shared", "/.taskrouter")], grpc.status.INVALID_ARGUMENT, /\/.taskrouter/],
      [[v("shared", "/")], grpc.status.INVALID_ARGUMENT, /root/],
      [[v("../x", "/v")], grpc.status.INVALID_ARGUMENT, /volume name/],
    ];
    for (const [volume_mounts, code, re] of cases) {
      await expectStatus(create({ container_name: "bad", volume_mounts }), code, re);
    }
    // A start that fails after the volumes were held (a missing workdir) lets them go.
    await expectStatus(
      create({ container_name: "bad", workdir: "/no/such", volume_mounts: [v("other", "/o")] }),
      grpc.status.FAILED_PRECONDITION,
      /workdir/,
    );
    assert.equal(await containerCount(), before);
    assert.deepEqual(await mountedBy("other"), []);
    await vols.call("DeleteVolume", { name: "other" });
  });

  it("volume rm is refused while a sidecar mounts it, allowed once it ended or its task is gone", async () => {
    const { w } = f;
    const plain = f.task; // a task without volumes of its own
    for (const name of ["v-term", "v-exit", "v-task"]) await vols.call("CreateVolume", { name });
    const term = await create(
      { container_name: "term", volume_mounts: [{ volume_id: "v-term", mount_path: "/v" }] },
      plain,
    );
    assert.deepEqual(await mountedBy("v-term"), [plain]);
    await expectStatus(
      vols.call("DeleteVolume", { name: "v-term" }),
      grpc.status.FAILED_PRECONDITION,
      new RegExp(`mounted by task ${plain} \\(its sidecar ${term.container_id}\\)`),
    );
    await w.unary("TaskContainerTerminate", { task_id: plain, container_id: term.container_id });
    assert.deepEqual(await mountedBy("v-term"), []);
    await vols.call("DeleteVolume", { name: "v-term" });

    // An entrypoint that exits on its own: the hold goes with its container.
    const exits = await create(
      {
        container_name: "exits",
        args: ["sh", "-c", "echo done > /v/f"],
        volume_mounts: [{ volume_id: "v-exit", mount_path: "/v" }],
      },
      plain,
    );
    const res = await w.unary("TaskContainerWait", {
      task_id: plain,
      container_id: exits.container_id,
      timeout: 60,
    });
    assert.equal((res.result as { status: number }).status, SUCCESS);
    assert.deepEqual(await mountedBy("v-exit"), []);
    await vols.call("DeleteVolume", { name: "v-exit" });

    // A running sidecar's hold goes with its task.
    const t2 = (await tasks.call("CreateTask", {})).task as Record<string, unknown>;
    const t2id = t2.task_id as string;
    await create(
      { container_name: "s", volume_mounts: [{ volume_id: "v-task", mount_path: "/v" }] },
      t2id,
    );
    await expectStatus(
      vols.call("DeleteVolume", { name: "v-task" }),
      grpc.status.FAILED_PRECONDITION,
    );
    await tasks.call("TerminateTask", { task_id: t2id });
    await vols.call("DeleteVolume", { name: "v-task" });
  });

  it("TaskReloadVolumes reaches a sidecar: OK, unknown id NOT_FOUND, ended or replaced FAILED_PRECONDITION", async () => {
    const { w } = f;
    assert.deepEqual((await sh(w, task, "mkdir -p /data/rl")).exit, ok);
    const side = await create({
      container_name: "reload",
      volume_mounts: [{ volume_id: "shared", mount_path: "/vol" }],
    });
    const id = side.container_id as string;
    await w.unary("TaskReloadVolumes", { task_id: task, container_id: id });
    // The main container's reload is unchanged.
    await w.unary("TaskReloadVolumes", { task_id: task, container_id: "" });
    await expectStatus(
      w.unary("TaskReloadVolumes", {
        task_id: task,
        container_id: "ctr-00000000000000000000000000",
      }),
      grpc.status.NOT_FOUND,
      /container/,
    );
    // A sidecar of another task is unknown here (a task reaches its own containers only).
    await expectStatus(
      w.unary("TaskReloadVolumes", { task_id: f.task, container_id: id }),
      grpc.status.NOT_FOUND,
    );
    // A sub_path mount: OK while the directory is the one mounted; replaced: FAILED_PRECONDITION.
    const sub = await create({
      container_name: "reload-sub",
      volume_mounts: [{ volume_id: "shared", mount_path: "/s", sub_path: "rl" }],
    });
    const subId = sub.container_id as string;
    await w.unary("TaskReloadVolumes", { task_id: task, container_id: subId });
    assert.deepEqual((await sh(w, task, "mv /data/rl /data/rl.old && mkdir /data/rl")).exit, ok);
    await expectStatus(
      w.unary("TaskReloadVolumes", { task_id: task, container_id: subId }),
      grpc.status.FAILED_PRECONDITION,
      /rl was removed or replaced/,
    );
    await w.unary("TaskContainerTerminate", { task_id: task, container_id: subId });
    await w.unary("TaskContainerTerminate", { task_id: task, container_id: id });
    await expectStatus(
      w.unary("TaskReloadVolumes", { task_id: task, container_id: id }),
      grpc.status.FAILED_PRECONDITION,
      /not running/,
    );
  });

  it("a router restart keeps a running sidecar's volume hold and mount", async () => {
    const dataDir = await tempDataDir();
    let d: Daemon = await startRuncDaemon(dataDir);
    let w2: WireClient | undefined;
    let v2: AdminWire | undefined;
    try {
      const client = new RouterClient(d.address);
      const image = await new ImagesAdminClient(client)
        .import(tarDirectory(join(f.s.dir, "tree")), { format: "tree", source: "test" })
        .finally(() => client.close());
      const t = (await d.tasks.create("keep")).id;
      v2 = new AdminWire(d.address, "Volumes");
      await v2.call("CreateVolume", { name: "kept" });
      w2 = new WireClient(d.address);
      const c = await w2.unary("TaskContainerCreate", {
        task_id: t,
        container_name: "s",
        image_id: image,
        args: FOREVER,
        volume_mounts: [{ volume_id: "kept", mount_path: "/k" }],
      });
      assert.deepEqual((await sh(w2, t, "echo before > /k/f", c.container_id as string)).exit, ok);
      w2.close();
      v2.close();
      await d.close();

      d = await startRuncDaemon(dataDir);
      w2 = new WireClient(d.address);
      v2 = new AdminWire(d.address, "Volumes");
      await expectStatus(
        v2.call("DeleteVolume", { name: "kept" }),
        grpc.status.FAILED_PRECONDITION,
        /its sidecar/,
      );
      assert.equal((await sh(w2, t, "cat /k/f", c.container_id as string)).stdout, "before\n");
      await w2.unary("TaskReloadVolumes", { task_id: t, container_id: c.container_id });
      await w2.unary("TaskContainerTerminate", { task_id: t, container_id: c.container_id });
      await v2.call("DeleteVolume", { name: "kept" });
      await d.tasks.terminate(t);
    } finally {
      w2?.close();
      v2?.close();
      await d.close();
      await removeDataDir(dataDir);
    }
  });
});
