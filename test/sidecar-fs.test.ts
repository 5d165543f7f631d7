/**
 * Sidecar containers (issue 12 part 4), the second half (first: sidecar.test.ts),
 * through the independent grpc-js + proto-loader stack: mounts and snapshots
 * with `container_id` on runc and crun, `task rm` leaving no container, mount or
 * cgroup, adoption after a router restart; FAILED_PRECONDITION naming runsc and
 * the host runtime.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { tarDirectory } from "../src/cli/tar-dir.ts";
import { ImagesAdminClient } from "../src/client/images.ts";
import type { Daemon } from "../src/daemon.ts";
import { mountsUnder } from "../src/runtime/runc/mounts.ts";
import {
  CRUN,
  RUNSC,
  removeDataDir,
  runcSkipReason,
  startRuncDaemon,
  startRuncRouter,
  tempDataDir,
} from "./helpers/runc.ts";
import { type SidecarSuite, startSidecarSuite } from "./helpers/sidecar-image.ts";
import { expectStatus, grpc, WireClient } from "./helpers/wire-client.ts";

const run = promisify(execFile);
const RUNTIMES = [
  { label: "runc", binary: "runc" },
  { label: "crun", binary: CRUN },
];
const TERMINATED = 3;

/** Cgroup directories left of task `t`'s sidecars (`<tag>-<task>+<ctr>`), on v1 or v2. */
async function sidecarCgroups(t: string): Promise<string[]> {
  const found: string[] = [];
  const roots = ["/sys/fs/cgroup/taskrouter"];
  for (const c of await readdir("/sys/fs/cgroup").catch(() => [])) {
    roots.push(join("/sys/fs/cgroup", c, "taskrouter"));
  }
  for (const root of roots) {
    for (const n of await readdir(root).catch(() => [])) {
      if (n.includes(`-${t}+`)) found.push(join(root, n));
    }
  }
  return found;
}

/** Imports the tree `dir` into daemon `d`'s store. */
async function importInto(d: Daemon, dir: string): Promise<string> {
  const { RouterClient } = await import("../src/client/client.ts");
  const client = new RouterClient(d.address);
  try {
    return await new ImagesAdminClient(client).import(tarDirectory(dir), {
      format: "tree",
      source: "test",
    });
  } finally {
    client.close();
  }
}

for (const { label, binary } of RUNTIMES) {
  const skip = await runcSkipReason(binary);
  describe(`sidecar containers: filesystems, removal, restart (${label})`, { skip }, () => {
    let f: SidecarSuite;
    before(async () => {
      f = await startSidecarSuite(binary);
    });
    after(async () => {
      await f?.close();
    });

    it("mounts and snapshots with container_id act on the sidecar's root", async () => {
      const { r, w, task, create, execIn } = f;
      const c = await create({
        container_name: "fs",
        args: ["sh", "-c", "while :; do sleep 1; done"],
      });
      const id = c.container_id as string;
      await w.unary("TaskMountDirectory", {
        task_id: task,
        path: Buffer.from("/mnt/x"),
        image_id: "",
        container_id: id,
      });
      assert.deepEqual(await execIn(["sh", "-c", "echo hi > /mnt/x/f && cat /mnt/x/f"], id), {
        exit: { code: 0 },
        out: "hi\n",
      });
      const inMain = await execIn(["sh", "-c", "test -e /mnt/x/f || echo absent"]);
      assert.equal(inMain.out, "absent\n");
      const dir = await w.unary("TaskSnapshotDirectory", {
        task_id: task,
        path: Buffer.from("/mnt/x"),
        snapshot_id: randomUUID(),
        ttl_seconds: 600,
        container_id: id,
      });
      const admin = new ImagesAdminClient(r.client);
      const paths = async (img: unknown) =>
        (await admin.inspect(img as string, true)).entries.map((e) =>
          Buffer.from(e.path).toString(),
        );
      const files = await paths(dir.image_id);
      assert.ok(
        files.some((p) => p.endsWith("f")),
        JSON.stringify(files),
      );
      const whole = await w.unary("TaskSnapshotFilesystem", {
        task_id: task,
        snapshot_id: randomUUID(),
        ttl_seconds: 600,
        container_id: id,
      });
      const all = await paths(whole.image_id);
      assert.ok(
        all.some((p) => p.endsWith("srv/server")),
        "the sidecar's own root",
      );
      await w.unary("TaskUnmountDirectory", {
        task_id: task,
        path: Buffer.from("/mnt/x"),
        container_id: id,
      });
      assert.equal((await execIn(["sh", "-c", "test -e /mnt/x/f || echo gone"], id)).out, "gone\n");
    });

    it("task rm ends every sidecar: no container, mount or cgroup of them is left", async () => {
      const { r, w, image } = f;
      const t = await r.newTask();
      const c = await w.unary("TaskContainerCreate", {
        task_id: t,
        container_name: "s",
        image_id: image,
        args: ["sh", "-c", "while :; do sleep 1; done"],
      });
      const root = join(r.dataDir, "runc", "state");
      const ids = async () => (await readdir(root)).filter((n) => n.startsWith(`${t}+`));
      assert.ok((await ids()).some((n) => n.endsWith(`+${c.container_id}`)));
      await r.tasks.terminate(t);
      assert.deepEqual(await ids(), []);
      const listed = await run(binary === "runc" ? "runc" : CRUN, [
        "--root",
        root,
        "list",
        "--quiet",
      ]).catch(() => ({ stdout: "" }));
      assert.ok(!listed.stdout.includes(`${t}+`), listed.stdout);
      assert.deepEqual(await mountsUnder(join(r.dataDir, "runc", "bundles", t)), []);
      assert.deepEqual(await sidecarCgroups(t), []);
    });

    it("sidecars survive a router restart: adopted running, with their records", async () => {
      const { s } = f;
      const dataDir = await tempDataDir();
      let d = await startRuncDaemon(dataDir, binary);
      try {
        const t = (await d.tasks.create("keep")).id;
        let w2 = new WireClient(d.address);
        const c = await w2.unary("TaskContainerCreate", {
          task_id: t,
          container_name: "s",
          image_id: await importInto(d, join(s.dir, "tree")),
          args: ["sh", "-c", "while :; do sleep 1; done"],
        });
        w2.close();
        await d.close();
        d = await startRuncDaemon(dataDir, binary);
        w2 = new WireClient(d.address);
        try {
          const list = await w2.unary("TaskContainerList", { task_id: t });
          const side = (list.containers as Record<string, unknown>[])[1];
          assert.deepEqual([side?.container_id, side?.status], [c.container_id, "running"]);
          await w2.unary("TaskContainerTerminate", { task_id: t, container_id: c.container_id });
          const res = await w2.unary("TaskContainerWait", {
            task_id: t,
            container_id: c.container_id,
            timeout: 0,
          });
          assert.equal((res.result as { status: number }).status, TERMINATED);
        } finally {
          w2.close();
        }
        await d.tasks.terminate(t);
      } finally {
        await d.close();
        await removeDataDir(dataDir, binary);
      }
    });
  });
}

const runscSkip = await runcSkipReason(RUNSC);
describe("sidecar containers under runsc", { skip: runscSkip }, () => {
  it("FAILED_PRECONDITION naming runsc (its sandbox's netstack cannot be joined)", async () => {
    const r = await startRuncRouter({ ociRuntime: RUNSC });
    const w = new WireClient(r.address);
    try {
      const task = await r.newTask();
      await expectStatus(
        w.unary("TaskContainerCreate", {
          task_id: task,
          container_name: "s",
          image_id: "im-x",
          args: ["true"],
        }),
        grpc.status.FAILED_PRECONDITION,
        /runsc/,
      );
    } finally {
      w.close();
      await r.close();
    }
  });
});

describe("sidecar containers where the runtime cannot run them", () => {
  it("host runtime: FAILED_PRECONDITION naming the runtime", async () => {
    const { startRouter } = await import("./helpers/router.ts");
    const r = await startRouter();
    const w = new WireClient(r.address);
    try {
      const task = await r.newTask();
      await expectStatus(
        w.unary("TaskContainerCreate", {
          task_id: task,
          container_name: "s",
          image_id: "im-x",
          args: ["true"],
        }),
        grpc.status.FAILED_PRECONDITION,
        /host runtime/,
      );
      const list = await w.unary("TaskContainerList", { task_id: task });
      assert.deepEqual(
        (list.containers as Record<string, unknown>[]).map((c) => c.container_name),
        ["main"],
      );
    } finally {
      w.close();
      await r.close();
    }
  });
});
