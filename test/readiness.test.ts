/**
 * Readiness probes (issue 12 part 2, PROTOCOL-LATER §5.6): `task create
 * --readiness-probe exec:CMD | tcp:PORT`, SandboxWaitUntilReady through the
 * independent grpc-js + proto-loader stack (ready_at, DEADLINE_EXCEEDED,
 * FAILED_PRECONDITION), bad probe specs, ready_at across a router restart,
 * and the CLI (`task create`, the READY column of `task ls`), on the host
 * runtime and on runc/crun/runsc where they run.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { TasksClient } from "../src/client/admin.ts";
import { RouterClient } from "../src/client/client.ts";
import { type Daemon, DEFAULT_CONFIG, startDaemon } from "../src/daemon.ts";
import { runCli } from "./helpers/cli-run.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { OCI_RUNTIMES, removeDataDir, runcSkipReason, startRuncRouter } from "./helpers/runc.ts";
import { expectStatus, grpc, STDERR, STDOUT, WireClient } from "./helpers/wire-client.ts";

const variants: { label: string; oci: string | undefined }[] = [
  { label: "host runtime", oci: undefined },
  ...OCI_RUNTIMES.map((o) => ({ label: `runc runtime, ${o.label}`, oci: o.binary })),
];

/** A TCP port nothing listens on right now. */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((res) => s.listen(0, "127.0.0.1", res));
  const port = (s.address() as { port: number }).port;
  await new Promise((res) => s.close(res));
  return port;
}

/** A TCP listener in the task: node (the host's, which the default runc root has too). */
const listener = (port: number) => [
  process.execPath,
  "-e",
  `require("net").createServer((s) => s.end()).listen(${port}, "127.0.0.1")`,
];

const waitReady = (w: WireClient, task_id: string, timeout: number) =>
  w.unary("SandboxWaitUntilReady", { task_id, timeout }, { deadlineMs: timeout * 1000 + 5000 });

for (const { label, oci } of variants) {
  const skip = oci ? await runcSkipReason(oci) : undefined;
  describe(`readiness probes (${label})`, { skip }, () => {
    let r: TestRouter;
    let w: WireClient;
    before(async () => {
      r = oci ? await startRuncRouter({ ociRuntime: oci }) : await startRouter();
      w = new WireClient(r.address);
    });
    after(async () => {
      w?.close();
      await r?.close();
    });

    /** Runs `argv` in `task` through the wire (no wait when `background`). */
    const run = async (task_id: string, argv: string[], background = false) => {
      const exec_id = randomUUID();
      await w.start({
        task_id,
        exec_id,
        command_args: argv,
        stdout_config: STDOUT.DEVNULL,
        stderr_config: STDERR.DEVNULL,
      });
      if (!background) assert.deepEqual(await w.wait(task_id, exec_id), { code: 0 });
    };

    it("exec probe: ready once a file made by an exec appears; ready_at is kept", async () => {
      const t0 = Date.now() / 1000;
      const t = await r.tasks.create("", {
        readinessProbe: "exec:test -f ready-flag",
        readinessIntervalMs: 50,
      });
      assert.equal(t.readinessProbe, "exec:test -f ready-flag");
      assert.equal(t.readinessIntervalMs, 50);
      assert.equal(t.readyAtMs, 0n);
      await expectStatus(waitReady(w, t.taskId, 0.3), grpc.status.DEADLINE_EXCEEDED, /not ready/);
      await run(t.taskId, ["touch", "ready-flag"]);
      const res = await waitReady(w, t.taskId, 30);
      const readyAt = res.ready_at as number;
      assert.ok(readyAt >= t0 && readyAt <= Date.now() / 1000, `ready_at ${readyAt}`);
      // Ready before the call: at once, the same instant; readiness is not lost.
      await run(t.taskId, ["rm", "ready-flag"]);
      assert.equal((await waitReady(w, t.taskId, 0)).ready_at, readyAt);
      const got = await r.tasks.get(t.taskId);
      assert.equal(Number(got.readyAtMs), Math.round(readyAt * 1000));
    });

    it("tcp probe: ready once a server in the task listens", async () => {
      const port = await freePort();
      const t = await r.tasks.create("", { readinessProbe: `tcp:${port}` });
      assert.equal(t.readinessIntervalMs, 250);
      await expectStatus(waitReady(w, t.taskId, 0.5), grpc.status.DEADLINE_EXCEEDED);
      await run(t.taskId, listener(port), true);
      const res = await waitReady(w, t.taskId, 30);
      assert.equal(typeof res.ready_at, "number");
      await r.tasks.terminate(t.taskId);
    });

    if (oci) {
      it("tcp probe connects in the task's network namespace, not the router's", async () => {
        const host: Server = createServer((s) => s.end());
        await new Promise<void>((res) => host.listen(0, "127.0.0.1", res));
        try {
          const port = (host.address() as { port: number }).port;
          const t = await r.tasks.create("", {
            readinessProbe: `tcp:${port}`,
            readinessIntervalMs: 50,
          });
          await expectStatus(waitReady(w, t.taskId, 1.5), grpc.status.DEADLINE_EXCEEDED);
          await r.tasks.terminate(t.taskId);
        } finally {
          host.close();
        }
      });
    }

    it("a task without a probe: FAILED_PRECONDITION saying so", async () => {
      const task = await r.newTask();
      await expectStatus(
        waitReady(w, task, 1),
        grpc.status.FAILED_PRECONDITION,
        /no readiness probe/,
      );
      assert.equal((await r.tasks.get(task)).readinessProbe, "");
    });

    it("terminating a task ends a wait for it with FAILED_PRECONDITION", async () => {
      const t = await r.tasks.create("", { readinessProbe: "exec:false" });
      const waiting = expectStatus(waitReady(w, t.taskId, 30), grpc.status.FAILED_PRECONDITION);
      await new Promise((res) => setTimeout(res, 300));
      await r.tasks.terminate(t.taskId);
      await waiting;
    });
  });
}

describe("readiness probe specs", () => {
  let r: TestRouter;
  let w: WireClient;
  before(async () => {
    r = await startRouter();
    w = new WireClient(r.address);
  });
  after(async () => {
    w?.close();
    await r?.close();
  });

  it("bad probes are INVALID_ARGUMENT and create nothing", async () => {
    const bad: [string, number, RegExp][] = [
      ["http:80", 0, /exec:SHELL-CMD or tcp:PORT/],
      ["exec:", 0, /needs a command/],
      ["exec:   ", 0, /needs a command/],
      ["tcp:0", 0, /1-65535/],
      ["tcp:65536", 0, /1-65535/],
      ["tcp:http", 0, /1-65535/],
      ["tcp:", 0, /1-65535/],
      ["exec:true", 5, /interval/],
      ["exec:true", 700_000, /interval/],
      ["", 100, /needs a readiness probe/],
    ];
    for (const [probe, interval, re] of bad) {
      await assert.rejects(
        r.tasks.create(`bad-${randomUUID().slice(0, 8)}`, {
          readinessProbe: probe,
          readinessIntervalMs: interval,
        }),
        (err: { code?: number; message: string }) => {
          assert.equal(err.code, grpc.status.INVALID_ARGUMENT, `${probe}: ${err.message}`);
          assert.match(err.message, re);
          return true;
        },
      );
    }
    assert.deepEqual(await r.tasks.list(), []);
  });

  it("a negative timeout is INVALID_ARGUMENT", async () => {
    const t = await r.tasks.create("", { readinessProbe: "exec:true" });
    await expectStatus(
      w.unary("SandboxWaitUntilReady", { task_id: t.taskId, timeout: -1 }),
      grpc.status.INVALID_ARGUMENT,
    );
  });

  it("an unknown task is NOT_FOUND", async () => {
    await expectStatus(
      w.unary("SandboxWaitUntilReady", { task_id: "no-such-task", timeout: 1 }),
      grpc.status.NOT_FOUND,
    );
  });
});

const restartVariants = [
  { label: "host runtime", oci: undefined as string | undefined },
  { label: "runc runtime", oci: "runc" },
];
for (const { label, oci } of restartVariants) {
  const skip = oci ? await runcSkipReason(oci) : undefined;
  describe(`readiness across a router restart (${label})`, { skip }, () => {
    let dataDir: string;
    let daemon: Daemon | undefined;
    const start = async () => {
      daemon = await startDaemon(
        {
          ...DEFAULT_CONFIG,
          listen: "127.0.0.1:0",
          dataDir,
          auth: { mode: "none" },
          runtime: oci ? "runc" : "host",
          ...(oci ? { ociRuntime: oci } : {}),
        },
        pino({ level: "silent" }),
      );
      return daemon;
    };
    before(async () => {
      dataDir = await mkdtemp(join(tmpdir(), "taskrouter-readiness-"));
    });
    after(async () => {
      if (daemon) {
        for (const t of daemon.tasks.list()) await daemon.tasks.terminate(t.id).catch(() => {});
        await daemon.close();
      }
      if (oci) await removeDataDir(dataDir, oci);
      else await rm(dataDir, { recursive: true, force: true });
    });

    it("keeps ready_at of ready tasks and probes the others again", async () => {
      let d = await start();
      let client = new RouterClient(d.address);
      let w = new WireClient(d.address);
      const tasks = new TasksClient(client);
      await tasks.create("ready", { readinessProbe: "exec:true", readinessIntervalMs: 20 });
      await tasks.create("later", { readinessProbe: "exec:test -f flag", readinessIntervalMs: 20 });
      const readyAt = (await waitReady(w, "ready", 30)).ready_at;
      w.close();
      client.close();
      await d.close();

      d = await start();
      client = new RouterClient(d.address);
      w = new WireClient(d.address);
      try {
        assert.equal((await waitReady(w, "ready", 0)).ready_at, readyAt);
        await expectStatus(waitReady(w, "later", 0.2), grpc.status.DEADLINE_EXCEEDED);
        const id = await client.start("later", ["touch", "flag"]);
        assert.deepEqual(await client.wait("later", id), { code: 0 });
        assert.equal(typeof (await waitReady(w, "later", 30)).ready_at, "number");
        const [ready] = (await new TasksClient(client).list()).filter((t) => t.taskId === "ready");
        assert.equal(Number(ready?.readyAtMs), Math.round((readyAt as number) * 1000));
      } finally {
        w.close();
        client.close();
      }
    });
  });
}

describe("CLI: task create --readiness-probe, task ls READY", () => {
  let r: TestRouter;
  let server: string[];
  before(async () => {
    r = await startRouter();
    server = ["--server", r.address];
  });
  after(() => r.close());

  it("creates tasks with probes and lists their readiness", async () => {
    const cli = async (...args: string[]) => {
      const res = await runCli([...server, ...args]);
      assert.equal(res.code, 0, res.stderr);
      return res.stdout;
    };
    await cli("task", "create", "--id", "plain");
    await cli("task", "create", "--id", "yes", "--readiness-probe", "exec:true");
    await cli(
      "task",
      "create",
      "--id",
      "no",
      "--readiness-probe",
      "exec:false",
      "--readiness-interval",
      "1s",
    );
    assert.equal((await r.tasks.get("no")).readinessIntervalMs, 1000);
    const w = new WireClient(r.address);
    try {
      await waitReady(w, "yes", 30);
    } finally {
      w.close();
    }
    const rows = (await cli("task", "ls")).trimEnd().split("\n");
    assert.match(
      rows[0] ?? "",
      /^TASK ID\s+STATE\s+RUNTIME\s+EXECS\s+CONTAINERS\s+READY\s+CREATED/,
    );
    const row = (id: string) => rows.find((l) => l.startsWith(`${id} `)) ?? "";
    assert.match(row("plain"), /\s-\s/);
    assert.match(row("yes"), /\sready\s/);
    assert.match(row("no"), /\snot ready\s/);

    const bad = await runCli([
      ...server,
      "task",
      "create",
      "--id",
      "bad",
      "--readiness-probe",
      "udp:53",
    ]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /exec:SHELL-CMD or tcp:PORT/);
    const badInterval = await runCli([
      ...server,
      "task",
      "create",
      "--readiness-probe",
      "exec:true",
      "--readiness-interval",
      "soon",
    ]);
    assert.notEqual(badInterval.code, 0);
    assert.match(badInterval.stderr, /not a duration/);
    assert.deepEqual((await r.tasks.list()).map((t) => t.taskId).sort(), ["no", "plain", "yes"]);
  });
});
