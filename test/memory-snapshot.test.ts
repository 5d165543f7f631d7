/**
 * Memory snapshots on runsc (gVisor's own checkpoint/restore), through the
 * independent grpc-js stack: TaskSnapshotMemory of a task running an
 * in-memory counter ends the task; CreateTask from_memory_snapshot restores
 * it and the counter continues above its old value; idempotency (concurrent
 * calls with one key: one snapshot), the listing with size and TTL, restore
 * refusals (NOT_FOUND, nothing created), a router restart, the CLI verbs,
 * and expiry. Skipped with the reason when runsc cannot run here.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { DEFAULT_CONFIG, startDaemon } from "../src/daemon.ts";
import { cliEnv, runCli } from "./helpers/cli-run.ts";
import { RUNSC, removeDataDir, runcSkipReason, tempDataDir } from "./helpers/runc.ts";
import { WireAdmin } from "./helpers/wire-admin.ts";
import { expectStatus, grpc, STDERR, STDOUT, WireClient } from "./helpers/wire-client.ts";

const skip = await runcSkipReason(RUNSC);

/** A router on `dataDir` with runsc tasks and the independent clients of its three services. */
async function open(dataDir: string, memorySnapshotTtlMs = DEFAULT_CONFIG.memorySnapshotTtlMs) {
  const daemon = await startDaemon(
    {
      ...DEFAULT_CONFIG,
      listen: "127.0.0.1:0",
      dataDir,
      auth: { mode: "none" },
      runtime: "runc",
      ociRuntime: RUNSC,
      memorySnapshotTtlMs,
    },
    pino({ level: "silent" }),
  );
  return {
    daemon,
    w: new WireClient(daemon.address),
    tasks: new WireAdmin(daemon.address, "taskrouter/v1/tasks.proto", "taskrouter.v1.Tasks"),
    snaps: new WireAdmin(
      daemon.address,
      "taskrouter/v1/memory_snapshots.proto",
      "taskrouter.v1.MemorySnapshots",
    ),
  };
}
type Router = Awaited<ReturnType<typeof open>>;

/** Closes the clients and the router (its runsc containers stay; see shut). */
async function close(r: Router | undefined): Promise<void> {
  if (!r) return;
  r.w.close();
  r.tasks.close();
  r.snaps.close();
  await r.daemon.close();
}

/** Ends every task of the router, closes it and removes its data dir (containers, mounts). */
async function shut(r: Router | undefined, dataDir: string | undefined): Promise<void> {
  try {
    for (const t of r?.daemon.tasks.list() ?? []) {
      await r?.daemon.tasks.terminate(t.id).catch(() => undefined);
    }
    await close(r);
  } finally {
    if (dataDir) await removeDataDir(dataDir, RUNSC);
  }
}

/** Runs `sh -c script` in `task`; its stdout (stderr must be empty, exit 0). */
async function sh(w: WireClient, task: string, script: string): Promise<string> {
  const exec_id = randomUUID();
  await w.start({
    task_id: task,
    exec_id,
    command_args: ["sh", "-c", script],
    stdout_config: STDOUT.PIPE,
    stderr_config: STDERR.PIPE,
  });
  const exit = await w.wait(task, exec_id);
  const err = (await w.readAll({ task_id: task, exec_id, file_descriptor: 1 })).data.toString();
  assert.deepEqual(exit, { code: 0 }, err);
  return (await w.readAll({ task_id: task, exec_id })).data.toString();
}

/** The counter's value (0 before its first write). */
async function count(w: WireClient, task: string): Promise<number> {
  return Number((await sh(w, task, "cat /tmp/count 2>/dev/null || echo 0")).trim());
}

/** Waits until the counter of `task` is above `n`; returns its value. */
async function countAbove(w: WireClient, task: string, n: number): Promise<number> {
  for (let i = 0; ; i++) {
    const v = await count(w, task);
    if (v > n) return v;
    if (i >= 600) throw new Error(`the counter of ${task} stays at ${v} (not above ${n})`);
    await sleep(50);
  }
}

/** A shell loop that keeps its count in memory (a shell variable) and shows it in /tmp/count. */
const COUNTER =
  "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done' " +
  "</dev/null >/dev/null 2>&1 &";

describe("memory snapshots (runsc)", { skip }, () => {
  let dataDir: string | undefined;
  let r: Router | undefined;
  const source = "ms-source";
  const key = randomUUID();
  let snapshotId = "";
  let before0 = 0;
  let deleted = false;

  before(async () => {
    dataDir = await tempDataDir();
    r = await open(dataDir);
  });
  after(() => shut(r, dataDir));

  it("snapshots a running task once per idempotency_key and ends it", async () => {
    assert.ok(r);
    await r.tasks.unary("CreateTask", { task_id: source });
    await sh(r.w, source, COUNTER);
    await sh(r.w, source, "echo kept > /root/marker");
    deleted =
      (await sh(r.w, source, "rm /etc/debian_version && echo yes || true")).trim() === "yes";
    // A file deleted from a lower layer (an overlay whiteout) must stay deleted after the restore.
    assert.equal(deleted, existsSync("/etc/debian_version"));
    before0 = await countAbove(r.w, source, 2);

    const calls = [0, 1, 2].map(() =>
      r?.w.unary("TaskSnapshotMemory", { task_id: source, idempotency_key: key }),
    );
    const ids = (await Promise.all(calls)).map((res) => res?.snapshot_id);
    snapshotId = String(ids[0]);
    assert.match(snapshotId, /^ms-[0-9a-f]{20}$/);
    assert.deepEqual(ids, [snapshotId, snapshotId, snapshotId], "one snapshot for one key");
    const dirs = await readdir(join(dataDir as string, "memory-snapshots"));
    assert.deepEqual(dirs, [snapshotId], "one checkpoint was made");

    // The task ended: gone from the listing, no exec starts.
    const listed = (await r.tasks.unary("ListTasks", {})).tasks as { task_id: string }[];
    assert.ok(!listed.some((t) => t.task_id === source), "the snapshotted task is gone");
    await expectStatus(
      r.w.start({ task_id: source, exec_id: randomUUID(), command_args: ["true"] }),
      grpc.status.FAILED_PRECONDITION,
    );
    // A retry after success returns the same id.
    const again = await r.w.unary("TaskSnapshotMemory", { task_id: source, idempotency_key: key });
    assert.equal(again.snapshot_id, snapshotId);
  });

  it("lists the snapshot with its size and expiry", async () => {
    assert.ok(r && dataDir);
    const { snapshots } = (await r.snaps.unary("ListMemorySnapshots", {})) as {
      snapshots: Record<string, string>[];
    };
    assert.equal(snapshots.length, 1);
    const s = snapshots[0] as Record<string, string>;
    assert.equal(s.snapshot_id, snapshotId);
    assert.equal(s.task_id, source);
    assert.equal(s.runtime, "runc");
    assert.equal(s.oci_runtime, "runsc");
    const image = join(dataDir, "memory-snapshots", snapshotId, "state", "image", "checkpoint.img");
    assert.ok(Number(s.bytes) >= (await stat(image)).size, `size ${s.bytes} covers the image`);
    assert.equal(
      Number(s.expires_at_ms) - Number(s.created_at_ms),
      DEFAULT_CONFIG.memorySnapshotTtlMs,
    );
  });

  it("restores it as a new task whose counter continues from its memory", async (t) => {
    assert.ok(r);
    const res = await r.tasks.unary("CreateTask", {
      task_id: "ms-restored",
      from_memory_snapshot: snapshotId,
    });
    const task = res.task as Record<string, unknown>;
    assert.equal(task.memory_snapshot, snapshotId);
    assert.equal(task.state, 1); // TASK_STATE_RUNNING
    const first = await count(r.w, "ms-restored");
    assert.ok(first >= before0, `the count (${first}) starts from the saved one (${before0})`);
    await countAbove(r.w, "ms-restored", first); // and keeps counting
    assert.equal(await sh(r.w, "ms-restored", "cat /root/marker"), "kept\n");
    if (deleted) {
      assert.equal(
        await sh(r.w, "ms-restored", "test -e /etc/debian_version || echo gone"),
        "gone\n",
      );
    } else t.diagnostic("no /etc/debian_version on this host: the whiteout check is not run");
    // Refusals create nothing.
    await expectStatus(
      r.tasks.unary("CreateTask", {
        task_id: "ms-x",
        from_memory_snapshot: "ms-00000000000000000000",
      }),
      grpc.status.NOT_FOUND,
      /not found/,
    );
    await expectStatus(
      r.tasks.unary("CreateTask", {
        task_id: "ms-x",
        from_memory_snapshot: snapshotId,
        memory_bytes: 64 << 20,
      }),
      grpc.status.INVALID_ARGUMENT,
      /keeps the snapshot's/,
    );
    const ids = ((await r.tasks.unary("ListTasks", {})).tasks as { task_id: string }[]).map(
      (t) => t.task_id,
    );
    assert.deepEqual(ids, ["ms-restored"]);
  });

  it("keeps snapshots, keys and restored tasks across a router restart", async () => {
    assert.ok(r && dataDir);
    await close(r);
    r = await open(dataDir);
    const again = await r.w.unary("TaskSnapshotMemory", { task_id: source, idempotency_key: key });
    assert.equal(again.snapshot_id, snapshotId);
    const { snapshots } = (await r.snaps.unary("ListMemorySnapshots", {})) as {
      snapshots: { snapshot_id: string }[];
    };
    assert.deepEqual(
      snapshots.map((s) => s.snapshot_id),
      [snapshotId],
    );
    const now = await count(r.w, "ms-restored");
    await countAbove(r.w, "ms-restored", now);
    const got = await r.tasks.unary("GetTask", { task_id: "ms-restored" });
    assert.equal((got.task as Record<string, unknown>).memory_snapshot, snapshotId);
  });

  it("CLI: memory-snapshot ls and rm, task create --from-memory-snapshot", async () => {
    assert.ok(r);
    const env = cliEnv({ TASKROUTER_SERVER: r.daemon.address });
    const ls = await runCli(["memory-snapshot", "ls"], env);
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /^SNAPSHOT ID +TASK +RUNTIME +CREATED +EXPIRES +SIZE\n/);
    assert.match(ls.stdout, new RegExp(`${snapshotId} +${source} +runc/runsc +\\S+ +\\S+ +\\d`));
    const bad = await runCli(
      ["task", "create", "--id", "ms-cli", "--from-memory-snapshot", "ms-11111111111111111111"],
      env,
    );
    assert.equal(bad.code, 125);
    assert.match(bad.stderr, /NotFound: memory snapshot .* not found/);
    const rm = await runCli(["memory-snapshot", "rm", snapshotId], env);
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal(rm.stdout, `${snapshotId}\n`);
    const q = await runCli(["memory-snapshot", "ls", "-q"], env);
    assert.equal(q.stdout, "");
    const gone = await runCli(
      ["task", "create", "--id", "ms-cli", "--from-memory-snapshot", snapshotId],
      env,
    );
    assert.equal(gone.code, 125);
    assert.match(gone.stderr, /NotFound/);
    assert.deepEqual(await readdir(join(dataDir as string, "memory-snapshots")), []);
    // The restored task does not depend on its snapshot.
    assert.equal(await sh(r.w, "ms-restored", "cat /root/marker"), "kept\n");
  });
});

describe("memory snapshot expiry (runsc)", { skip }, () => {
  let dataDir: string | undefined;
  let r: Router | undefined;
  before(async () => {
    dataDir = await tempDataDir();
    r = await open(dataDir, 1500);
  });
  after(() => shut(r, dataDir));

  it("deletes a snapshot once its TTL has passed; a restore is then NOT_FOUND", async () => {
    assert.ok(r && dataDir);
    await r.tasks.unary("CreateTask", { task_id: "ms-short" });
    const res = await r.w.unary("TaskSnapshotMemory", {
      task_id: "ms-short",
      idempotency_key: randomUUID(),
    });
    const id = String(res.snapshot_id);
    const dir = join(dataDir, "memory-snapshots");
    for (let i = 0; (await readdir(dir)).length > 0; i++) {
      if (i >= 600) throw new Error("the expired snapshot was never deleted");
      await sleep(50);
    }
    const { snapshots } = (await r.snaps.unary("ListMemorySnapshots", {})) as {
      snapshots: unknown[];
    };
    assert.deepEqual(snapshots, []);
    await expectStatus(
      r.tasks.unary("CreateTask", { task_id: "ms-late", from_memory_snapshot: id }),
      grpc.status.NOT_FOUND,
    );
    assert.deepEqual((await r.tasks.unary("ListTasks", {})).tasks, []);
  });
});
