/**
 * Volume grants of sidecars (serve --auth jwt, runc): with a task token,
 * TaskContainerCreate.volume_mounts may name only the volumes the task was
 * created with (read-only where the task has them read-only); any other name,
 * an existing volume of another task or one that does not exist, is
 * PERMISSION_DENIED before anything is looked up, held or started. An admin
 * token may mount any volume.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { issueToken } from "../src/auth/tokens.ts";
import { tarDirectory } from "../src/cli/tar-dir.ts";
import { ImagesAdminClient } from "../src/client/images.ts";
import { AdminWire } from "./helpers/admin-wire.ts";
import { HOUR } from "./helpers/auth-common.ts";
import { scratch } from "./helpers/images.ts";
import type { TestRouter } from "./helpers/router.ts";
import { runcSkipReason, startRuncRouter } from "./helpers/runc.ts";
import { makeSidecarImage } from "./helpers/sidecar-image.ts";
import { expectStatus, FD, grpc, STDERR, STDOUT, WireClient } from "./helpers/wire-client.ts";

const FOREVER = ["sh", "-c", "while :; do sleep 1; done"];
const skip = await runcSkipReason("runc");

/** A wire client whose every call carries `token`. */
function wireWith(address: string, token: string): WireClient {
  const withToken: grpc.Interceptor = (options, next) =>
    new grpc.InterceptingCall(next(options), {
      start(metadata, listener, start) {
        metadata.set("authorization", `Bearer ${token}`);
        start(metadata, listener);
      },
    });
  return new WireClient(address, { interceptors: [withToken] } as grpc.ChannelOptions);
}

describe("sidecar volume grants (runc, --auth jwt)", { skip }, () => {
  let r: TestRouter;
  let s: Awaited<ReturnType<typeof scratch>>;
  let vols: AdminWire;
  let tasks: AdminWire;
  let asTask: WireClient;
  let asAdmin: WireClient;
  let image: string;
  let task: string;
  before(async () => {
    s = await scratch();
    r = await startRuncRouter({ auth: { mode: "jwt" } });
    const admin = r.adminToken as string;
    vols = new AdminWire(r.address, "Volumes", admin);
    tasks = new AdminWire(r.address, "Tasks", admin);
    const tree = join(s.dir, "tree");
    await makeSidecarImage(tree);
    image = await new ImagesAdminClient(r.client).import(tarDirectory(tree), {
      format: "tree",
      source: "test",
    });
    for (const name of ["mine", "shelf", "other"]) await vols.call("CreateVolume", { name });
    const res = await tasks.call("CreateTask", {
      volumes: [
        { name: "mine", path: "/data" },
        { name: "shelf", path: "/shelf", read_only: true },
      ],
    });
    task = (res.task as Record<string, unknown>).task_id as string;
    asTask = wireWith(
      r.address,
      await issueToken(
        r.daemon.signingKey as NonNullable<typeof r.daemon.signingKey>,
        { task },
        HOUR,
      ),
    );
    asAdmin = wireWith(r.address, admin);
  });
  after(async () => {
    asTask?.close();
    asAdmin?.close();
    vols?.close();
    tasks?.close();
    await r?.close();
    await s?.cleanup();
  });

  const create = (w: WireClient, name: string, mounts: Record<string, unknown>[]) =>
    w.unary("TaskContainerCreate", {
      task_id: task,
      image_id: image,
      args: FOREVER,
      container_name: name,
      volume_mounts: mounts,
    });
  const containers = async () =>
    (
      (await asAdmin.unary("TaskContainerList", { task_id: task, include_terminated: true }))
        .containers as Record<string, unknown>[]
    ).map((c) => c.container_name);
  const mountedBy = async (name: string) => {
    const list = (await vols.call("ListVolumes", {})).volumes as Record<string, unknown>[];
    return list.find((v) => v.name === name)?.mounted_by;
  };

  it("a task token may not mount another volume, nor probe names: PERMISSION_DENIED, nothing held", async () => {
    for (const volume_id of ["other", "no-such-volume"]) {
      const err = await expectStatus(
        create(asTask, `c-${volume_id}`, [{ volume_id, mount_path: "/v" }]),
        grpc.status.PERMISSION_DENIED,
      );
      assert.match(err.details, new RegExp(`volume "${volume_id}" is not one of task`));
    }
    assert.deepEqual(await containers(), ["main"]);
    assert.deepEqual(await mountedBy("other"), []);
    // Nothing holds it: an admin may remove and re-create it.
    await vols.call("DeleteVolume", { name: "other" });
    await vols.call("CreateVolume", { name: "other" });
  });

  it("a volume the task has read-only may be mounted read-only only", async () => {
    const err = await expectStatus(
      create(asTask, "shelf-rw", [{ volume_id: "shelf", mount_path: "/v" }]),
      grpc.status.PERMISSION_DENIED,
    );
    assert.match(err.details, /read-only/);
    const ro = await create(asTask, "shelf-ro", [
      { volume_id: "shelf", mount_path: "/v", read_only: true },
    ]);
    assert.ok(ro.container_id);
    await asTask.unary("TaskContainerTerminate", { task_id: task, container_id: ro.container_id });
  });

  it("the task's own volume mounts with its token; any volume with an admin token", async () => {
    const own = await create(asTask, "own", [{ volume_id: "mine", mount_path: "/v" }]);
    const other = await create(asAdmin, "admins", [{ volume_id: "other", mount_path: "/o" }]);
    const exec_id = "see-own";
    await asTask.start({
      task_id: task,
      exec_id,
      command_args: ["sh", "-c", "echo hi > /v/f && cat /v/f"],
      container_id: own.container_id as string,
      stdout_config: STDOUT.PIPE,
      stderr_config: STDERR.STDOUT,
    } as never);
    assert.deepEqual(await asTask.wait(task, exec_id), { code: 0 });
    const out = await asTask.readAll({ task_id: task, exec_id, file_descriptor: FD.STDOUT });
    assert.equal(out.data.toString(), "hi\n");
    assert.deepEqual(await mountedBy("other"), [task]);
    for (const c of [own, other]) {
      await asAdmin.unary("TaskContainerTerminate", {
        task_id: task,
        container_id: c.container_id,
      });
    }
  });
});
