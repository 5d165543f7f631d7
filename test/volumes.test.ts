/**
 * Named volumes (issue 12 part 7), what needs no container: the Volumes
 * admin service through the independent grpc-js + proto-loader stack
 * (create, list, delete, hostile names refused and changing nothing), the
 * host runtime's refusal of volumes, admin-only access, the CLI (`volume
 * create|ls|rm`, `task create --volume`), and the store across a router
 * restart. Containers sharing volumes: test/volumes-runc.test.ts.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { issueToken } from "../src/auth/tokens.ts";
import { DEFAULT_CONFIG, startDaemon } from "../src/daemon.ts";
import { AdminWire } from "./helpers/admin-wire.ts";
import { cliEnv, runCli } from "./helpers/cli-run.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { expectStatus, grpc } from "./helpers/wire-client.ts";

const HOSTILE_NAMES = ["", "../x", "a/b", ".", "..", "x".repeat(65), "-a", "a b", "a\0b", "é"];

describe("volumes: admin service, names, host runtime", () => {
  let r: TestRouter;
  let vols: AdminWire;
  let tasks: AdminWire;
  before(async () => {
    r = await startRouter();
    vols = new AdminWire(r.address, "Volumes");
    tasks = new AdminWire(r.address, "Tasks");
  });
  after(async () => {
    vols?.close();
    tasks?.close();
    await r?.close();
  });
  const local = () => readdir(join(r.dataDir, "volumes", "local")).catch(() => []);

  it("creates (idempotently), lists with size and users, deletes", async () => {
    const res = await vols.call("CreateVolume", { name: "v1" });
    assert.equal(res.created, true);
    const v = res.volume as Record<string, unknown>;
    assert.equal(v.name, "v1");
    assert.deepEqual(v.mounted_by, []);
    assert.ok(Math.abs(Number(v.created_at_ms) - Date.now()) < 3_600_000);
    assert.equal((await vols.call("CreateVolume", { name: "v1" })).created, false);
    // Files written into the volume count in its size.
    await writeFile(join(r.dataDir, "volumes", "local", "v1", "f"), Buffer.alloc(64 * 1024, 1));
    const list = (await vols.call("ListVolumes", {})).volumes as Record<string, unknown>[];
    assert.deepEqual(
      list.map((x) => x.name),
      ["v1"],
    );
    assert.ok(Number(list[0]?.size_bytes) >= 64 * 1024, `size ${list[0]?.size_bytes}`);
    await vols.call("DeleteVolume", { name: "v1" });
    assert.deepEqual((await vols.call("ListVolumes", {})).volumes, []);
    assert.deepEqual(await local(), []);
    await expectStatus(
      vols.call("DeleteVolume", { name: "v1" }),
      grpc.status.NOT_FOUND,
      /volume "v1" not found/,
    );
  });

  it("hostile or bad names are INVALID_ARGUMENT and change nothing", async () => {
    await vols.call("CreateVolume", { name: "keep" });
    for (const name of HOSTILE_NAMES) {
      await expectStatus(
        vols.call("CreateVolume", { name }),
        grpc.status.INVALID_ARGUMENT,
        /volume name/,
      );
      await expectStatus(vols.call("DeleteVolume", { name }), grpc.status.INVALID_ARGUMENT);
    }
    const list = (await vols.call("ListVolumes", {})).volumes as Record<string, unknown>[];
    assert.deepEqual(
      list.map((x) => x.name),
      ["keep"],
    );
    assert.deepEqual(await local(), ["keep"]);
    assert.deepEqual(await readdir(join(r.dataDir, "volumes", "records")), ["keep.json"]);
    // Nothing escaped the data dir.
    await assert.rejects(stat(join(r.dataDir, "x")));
    await vols.call("DeleteVolume", { name: "keep" });
  });

  it("the host runtime refuses volumes (FAILED_PRECONDITION naming it); no task is made", async () => {
    await vols.call("CreateVolume", { name: "hv" });
    const before = ((await tasks.call("ListTasks", {})).tasks as unknown[]).length;
    await expectStatus(
      tasks.call("CreateTask", {
        task_id: "hosttask",
        runtime: "host",
        volumes: [{ name: "hv", path: "/data" }],
      }),
      grpc.status.FAILED_PRECONDITION,
      /host runtime cannot mount volumes/,
    );
    // A bad path is INVALID_ARGUMENT whatever the runtime.
    await expectStatus(
      tasks.call("CreateTask", { runtime: "host", volumes: [{ name: "hv", path: "data" }] }),
      grpc.status.INVALID_ARGUMENT,
      /must be absolute/,
    );
    assert.equal(((await tasks.call("ListTasks", {})).tasks as unknown[]).length, before);
    const list = (await vols.call("ListVolumes", {})).volumes as Record<string, unknown>[];
    assert.deepEqual(list[0]?.mounted_by, []);
    // A task without volumes shows none.
    const t = (await tasks.call("CreateTask", { runtime: "host" })).task as Record<string, unknown>;
    assert.deepEqual(t.volumes, []);
    await tasks.call("TerminateTask", { task_id: t.task_id });
    await vols.call("DeleteVolume", { name: "hv" });
  });
});

describe("volumes: admin tokens only", () => {
  let r: TestRouter;
  before(async () => {
    r = await startRouter({ auth: { mode: "jwt" } });
  });
  after(async () => {
    await r?.close();
  });

  it("a task token gets PERMISSION_DENIED on the Volumes service; an admin token works", async () => {
    const key = r.daemon.signingKey;
    assert.ok(key);
    const task = await r.newTask();
    const asTask = new AdminWire(r.address, "Volumes", await issueToken(key, { task }, 60_000));
    const asAdmin = new AdminWire(r.address, "Volumes", r.adminToken);
    try {
      await expectStatus(
        asTask.call("CreateVolume", { name: "x" }),
        grpc.status.PERMISSION_DENIED,
        /admin/,
      );
      await expectStatus(asTask.call("ListVolumes", {}), grpc.status.PERMISSION_DENIED);
      assert.deepEqual((await asAdmin.call("ListVolumes", {})).volumes, []);
    } finally {
      asTask.close();
      asAdmin.close();
    }
  });
});

describe("volumes: CLI", () => {
  let r: TestRouter;
  before(async () => {
    r = await startRouter();
  });
  after(async () => {
    await r?.close();
  });
  const cli = (...args: string[]) => runCli([...args, "--server", r.address], cliEnv());

  it("volume create, ls, rm; task create --volume", async () => {
    let res = await cli("volume", "create", "data");
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout, "data\n");
    res = await cli("volume", "create", "data");
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stderr, /volume data already exists/);
    res = await cli("volume", "ls");
    assert.equal(res.code, 0, res.stderr);
    const lines = res.stdout.trimEnd().split("\n");
    assert.match(lines[0] ?? "", /^NAME +SIZE +CREATED +MOUNTED BY$/);
    assert.match(lines[1] ?? "", /^data +[\d.]+ \S+ +\d{4}-\d\d-\d\dT\S+ +-$/);
    assert.equal((await cli("volume", "ls", "-q")).stdout, "data\n");

    res = await cli("volume", "create", "../x");
    assert.equal(res.code, 125);
    assert.match(res.stderr, /InvalidArgument: volume name/);
    // Bad --volume syntax is the CLI's own error; the host runtime refuses volumes.
    res = await cli("task", "create", "--volume", "data");
    assert.notEqual(res.code, 0);
    assert.match(res.stderr, /--volume takes NAME:\/path\[:ro\]/);
    res = await cli("task", "create", "--runtime", "host", "--volume", "data:/d:ro");
    assert.equal(res.code, 125);
    assert.match(res.stderr, /FailedPrecondition: the host runtime cannot mount volumes/);

    res = await cli("volume", "rm", "data", "nope");
    assert.equal(res.code, 125);
    assert.equal(res.stdout, "data\n");
    assert.match(res.stderr, /NotFound: volume "nope" not found/);
    assert.equal((await cli("volume", "ls", "-q")).stdout, "");
  });
});

describe("volumes: the store across a router restart", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskrouter-volumes-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const start = () =>
    startDaemon(
      {
        ...DEFAULT_CONFIG,
        listen: "127.0.0.1:0",
        dataDir: dir,
        auth: { mode: "none" },
        runtime: "host",
      },
      pino({ level: "silent" }),
    );

  it("volumes and their files are kept; files of volumes without a record go", async () => {
    let d = await start();
    let w = new AdminWire(d.address, "Volumes");
    let created: unknown;
    try {
      created = ((await w.call("CreateVolume", { name: "keep" })).volume as Record<string, unknown>)
        .created_at_ms;
      await writeFile(join(dir, "volumes", "local", "keep", "file"), "kept");
      // A leftover of a create or delete cut short: files without a record.
      await mkdir(join(dir, "volumes", "local", "orphan"));
    } finally {
      w.close();
      await d.close();
    }
    d = await start();
    w = new AdminWire(d.address, "Volumes");
    try {
      const list = (await w.call("ListVolumes", {})).volumes as Record<string, unknown>[];
      assert.deepEqual(
        list.map((v) => [v.name, v.created_at_ms]),
        [["keep", created]],
      );
      assert.deepEqual(await readdir(join(dir, "volumes", "local")), ["keep"]);
      assert.deepEqual(await readdir(join(dir, "volumes", "local", "keep")), ["file"]);
    } finally {
      w.close();
      await d.close();
    }
  });
});
