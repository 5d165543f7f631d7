/**
 * A `workdir` that is a symlink loop inside a runc task (or inside a
 * sidecar's image) is FAILED_PRECONDITION naming the path, as a missing
 * workdir is, and nothing starts: TaskExecStart in the main container and in
 * a sidecar, and TaskContainerCreate. The router resolves the path on its
 * side of the task's root (src/runtime/runc/confined-path.ts), so the loop
 * is met there, not by a process in the task. Through the independent
 * grpc-js stack.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdir, symlink } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { tarDirectory } from "../src/cli/tar-dir.ts";
import { ImagesAdminClient } from "../src/client/images.ts";
import { AdminWire } from "./helpers/admin-wire.ts";
import { runcSkipReason } from "./helpers/runc.ts";
import { makeSidecarImage, type SidecarSuite, startSidecarSuite } from "./helpers/sidecar-image.ts";
import { expectStatus, grpc, STDOUT } from "./helpers/wire-client.ts";

const skip = await runcSkipReason();

describe("a workdir that is a symlink loop (runc)", { skip }, () => {
  let f: SidecarSuite;
  /** The sidecar image with /loop -> /loop and /tmp/a -> b, /tmp/b -> a. */
  let loopImage: string;
  let sidecar: string;
  before(async () => {
    f = await startSidecarSuite("runc");
    const tree = join(f.s.dir, "loop-tree");
    await makeSidecarImage(tree);
    await symlink("/loop", join(tree, "loop"));
    await symlink("b", join(tree, "tmp", "a"));
    await symlink("a", join(tree, "tmp", "b"));
    const admin = new ImagesAdminClient(f.r.client);
    loopImage = await admin.import(tarDirectory(tree), { format: "tree", source: "test" });
    const res = await f.create({
      container_name: "side",
      image_id: loopImage,
      args: ["sleep", "600"],
    });
    sidecar = res.container_id as string;
  });
  after(async () => {
    await f?.close();
  });

  /** TaskExecStart with `workdir` in `container_id`: FAILED_PRECONDITION naming it, nothing started. */
  const refused = async (workdir: string, container_id = "") => {
    const exec_id = randomUUID();
    const req = {
      task_id: f.task,
      exec_id,
      command_args: ["true"],
      stdout_config: STDOUT.PIPE,
      workdir,
      container_id,
    };
    const e = await expectStatus(f.w.start(req), grpc.status.FAILED_PRECONDITION);
    assert.ok(e.details.includes(JSON.stringify(workdir)), `${e.details} names ${workdir}`);
    assert.match(e.details, /too many levels of symbolic links/);
    await expectStatus(f.w.poll(f.task, exec_id), grpc.status.NOT_FOUND);
  };

  it("TaskExecStart in the main container: loops the task made", async () => {
    const made = await f.execIn([
      "sh",
      "-c",
      "ln -s /loop /loop && ln -s b /tmp/a && ln -s a /tmp/b",
    ]);
    assert.deepEqual(made.exit, { code: 0 }, made.out);
    for (const wd of ["/loop", "/loop/sub", "/tmp/a", "/tmp/b/c"]) await refused(wd);
    // The task is fine: a plain exec still runs.
    assert.deepEqual((await f.execIn(["true"])).exit, { code: 0 });
  });

  it("TaskExecStart in a sidecar: loops of its image", async () => {
    for (const wd of ["/loop", "/tmp/a"]) await refused(wd, sidecar);
    assert.deepEqual((await f.execIn(["cat", "/etc/marker"], sidecar)).exit, { code: 0 });
  });

  it("TaskContainerCreate: a workdir that loops in the image; no container runs", async () => {
    const e = await expectStatus(
      f.create({
        container_name: "looped",
        image_id: loopImage,
        args: ["true"],
        workdir: "/tmp/a",
      }),
      grpc.status.FAILED_PRECONDITION,
    );
    assert.ok(e.details.includes('"/tmp/a"'), e.details);
    assert.match(e.details, /too many levels of symbolic links/);
    const list = await f.w.unary("TaskContainerList", {
      task_id: f.task,
      include_terminated: true,
    });
    const rows = list.containers as { container_name: string; status: string }[];
    assert.deepEqual(
      rows.map((c) => c.container_name),
      ["main", "side"],
    );
  });

  it("an entrypoint whose PATH meets a loop first: FAILED_PRECONDITION (execvp stops at ELOOP too), no task", async () => {
    const tree = join(f.s.dir, "path-loop-tree");
    await makeSidecarImage(tree);
    await mkdir(join(tree, "usr", "local"), { recursive: true });
    await symlink("/usr/local/sbin", join(tree, "usr", "local", "sbin"));
    const admin = new ImagesAdminClient(f.r.client);
    const image = await admin.import(tarDirectory(tree), { format: "tree", source: "test" });
    const tasks = new AdminWire(f.r.address, "Tasks");
    try {
      const before = ((await tasks.call("ListTasks", {})).tasks as unknown[]).length;
      const e = await expectStatus(
        tasks.call("CreateTask", { image, entrypoint: ["sleep", "600"] }),
        grpc.status.FAILED_PRECONDITION,
      );
      assert.match(e.details, /too many levels of symbolic links/);
      assert.equal(((await tasks.call("ListTasks", {})).tasks as unknown[]).length, before);
    } finally {
      tasks.close();
    }
  });
});
