/**
 * TaskSnapshotMemory where no checkpoint can be made, through the independent
 * grpc-js stack: the host runtime, and runc and crun (Debian's criu 3.17 fails
 * at its dump on this kernel; Debian's crun is built without checkpoint). The
 * call is FAILED_PRECONDITION naming the runtime and its reason, and the task
 * stays running and usable, with its files, and no snapshot is left. Also the
 * request checks every runtime shares (empty key, unknown task).
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { issueToken } from "../src/auth/tokens.ts";
import { runCli } from "./helpers/cli-run.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { CRUN, runcSkipReason, startRuncRouter } from "./helpers/runc.ts";
import { WireAdmin } from "./helpers/wire-admin.ts";
import { expectStatus, grpc, STDERR, STDOUT, WireClient } from "./helpers/wire-client.ts";

const variants = [
  {
    label: "host runtime",
    oci: undefined,
    reason: /the host runtime cannot take memory snapshots/,
  },
  { label: "runc", oci: "runc", reason: /the runc OCI runtime cannot checkpoint task \S+: .*criu/ },
  { label: "crun", oci: CRUN, reason: /the crun OCI runtime cannot checkpoint task \S+: ./ },
];

for (const { label, oci, reason } of variants) {
  const skip = oci ? await runcSkipReason(oci) : undefined;
  describe(`TaskSnapshotMemory refused (${label})`, { skip }, () => {
    let r: TestRouter;
    let w: WireClient;
    let snaps: WireAdmin;
    let task: string;
    /** Where the task writes its file: /root in a container, its default dir on the host. */
    const dir = oci ? "/root" : undefined;
    before(async () => {
      r = oci ? await startRuncRouter({ ociRuntime: oci }) : await startRouter();
      w = new WireClient(r.address);
      snaps = new WireAdmin(
        r.address,
        "taskrouter/v1/memory_snapshots.proto",
        "taskrouter.v1.MemorySnapshots",
      );
      task = await r.newTask();
    });
    after(async () => {
      w?.close();
      snaps?.close();
      await r?.close();
    });

    async function sh(script: string): Promise<string> {
      const exec_id = randomUUID();
      await w.start({
        task_id: task,
        exec_id,
        command_args: ["sh", "-c", script],
        stdout_config: STDOUT.PIPE,
        stderr_config: STDERR.DEVNULL,
      });
      assert.deepEqual(await w.wait(task, exec_id), { code: 0 });
      return (await w.readAll({ task_id: task, exec_id })).data.toString();
    }

    it("answers FAILED_PRECONDITION naming the runtime; the task runs on unchanged", async (t) => {
      const file = `${dir ?? (await sh("pwd")).trim()}/before-snapshot`;
      await sh(`echo still-here > ${file}`);
      const err = await expectStatus(
        w.unary("TaskSnapshotMemory", { task_id: task, idempotency_key: randomUUID() }),
        grpc.status.FAILED_PRECONDITION,
        reason,
      );
      t.diagnostic(err.details);
      assert.ok(!err.details.includes(r.dataDir), `no data dir path in ${err.details}`);
      assert.equal(await sh(`cat ${file}`), "still-here\n");
      assert.equal((await r.tasks.get(task)).state, 1); // TASK_STATE_RUNNING
      const { snapshots } = await snaps.unary("ListMemorySnapshots", {});
      assert.deepEqual(snapshots, []);
      assert.deepEqual(await readdir(join(r.dataDir, "memory-snapshots")), []);
    });

    it("refuses an empty key and an unknown task", async () => {
      await expectStatus(
        w.unary("TaskSnapshotMemory", { task_id: task, idempotency_key: "" }),
        grpc.status.INVALID_ARGUMENT,
        /idempotency_key/,
      );
      await expectStatus(
        w.unary("TaskSnapshotMemory", { task_id: "no-such-task", idempotency_key: "k" }),
        grpc.status.NOT_FOUND,
      );
      await expectStatus(
        snaps.unary("DeleteMemorySnapshot", { snapshot_id: "" }),
        grpc.status.INVALID_ARGUMENT,
      );
      const res = await snaps.unary("DeleteMemorySnapshot", { snapshot_id: "../../etc" });
      assert.equal(res.existed, false);
    });
  });
}

describe("memory snapshots and tokens", () => {
  let r: TestRouter;
  const opened: WireAdmin[] = [];
  before(async () => {
    r = await startRouter({ auth: { mode: "jwt" } });
  });
  after(async () => {
    for (const c of opened) c.close();
    await r?.close();
  });
  const as = (token: string, proto: string, service: string) => {
    const c = new WireAdmin(r.address, proto, service, token);
    opened.push(c);
    return c;
  };

  it("a task token reaches only its own task and not the admin service", async () => {
    const a = await r.newTask();
    const b = await r.newTask();
    const key = r.daemon.signingKey;
    assert.ok(key);
    const token = await issueToken(key, { task: a }, 60_000);
    const router = as(
      token,
      "modal_proto/task_command_router.proto",
      "modal.task_command_router.TaskCommandRouter",
    );
    await expectStatus(
      router.unary("TaskSnapshotMemory", { task_id: b, idempotency_key: "k" }),
      grpc.status.PERMISSION_DENIED,
    );
    // Its own task: past the token check (the host runtime then refuses).
    await expectStatus(
      router.unary("TaskSnapshotMemory", { task_id: a, idempotency_key: "k" }),
      grpc.status.FAILED_PRECONDITION,
      /host runtime/,
    );
    const admin = as(
      token,
      "taskrouter/v1/memory_snapshots.proto",
      "taskrouter.v1.MemorySnapshots",
    );
    await expectStatus(admin.unary("ListMemorySnapshots", {}), grpc.status.PERMISSION_DENIED);
    await expectStatus(
      admin.unary("DeleteMemorySnapshot", { snapshot_id: "ms-00000000000000000000" }),
      grpc.status.PERMISSION_DENIED,
    );
  });
});

it("serve refuses a memory snapshot TTL that is not a positive duration", async () => {
  const dataDir = await mkdtemp(join(tmpdir(), "taskrouter-ms-ttl-"));
  try {
    for (const ttl of ["0", "soon"]) {
      const res = await runCli([
        "serve",
        ...["--memory-snapshot-ttl", ttl, "--listen", "127.0.0.1:0", "--data-dir", dataDir],
      ]);
      assert.notEqual(res.code, 0);
      assert.match(res.stderr, /--memory-snapshot-ttl/);
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});
