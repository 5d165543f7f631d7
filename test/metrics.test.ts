import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { RouterClient } from "../src/client/client.ts";
import { TaskImagesClient } from "../src/client/images.ts";
import { TaskRouterError } from "../src/errors.ts";
import { scrapeProm, sample as value } from "./helpers/prom.ts";
import { collect, startRouter, type TestRouter } from "./helpers/router.ts";

const ROUTER = "/modal.task_command_router.TaskCommandRouter";

describe("metrics (serve --metrics-listen): Prometheus text after real execs", () => {
  let r: TestRouter;
  let task: string;
  let url: string;
  const scrape = () => scrapeProm(url);

  before(async () => {
    r = await startRouter({ auth: { mode: "jwt" }, metricsListen: "127.0.0.1:0" });
    assert.ok(r.daemon.metricsAddress);
    url = `http://${r.daemon.metricsAddress}/metrics`;
    task = await r.newTask();
  });
  after(() => r?.close());

  it("counts execs by cause, start latency, live execs and tasks, bytes in and out", async () => {
    const before = await scrape();
    assert.equal(value(before, 'taskrouter_execs_started_total{runtime="host"}'), 0);
    assert.equal(value(before, "taskrouter_tasks_live"), 1);

    const big = await r.client.start(task, ["head", "-c", "3000000", "/dev/zero"], {
      stdout: "pipe",
    });
    assert.equal((await collect(r.client.read(task, big, "stdout"))).length, 3_000_000);
    assert.deepEqual(await r.client.wait(task, big), { code: 0 });
    const killed = await r.client.start(task, ["sh", "-c", "kill -9 $$"]);
    assert.deepEqual(await r.client.wait(task, killed), { signal: 9 });
    const cat = await r.client.start(task, ["cat"], { stdout: "pipe" });
    // The same start again (a client's retry) is one exec, counted once.
    await r.client.start(task, ["cat"], { stdout: "pipe", execId: cat });
    await r.client.writeStdin(task, cat, 0, Buffer.from("hello"));
    const sleeper = await r.client.start(task, ["sleep", "30"]);

    let m = await scrape();
    assert.equal(value(m, 'taskrouter_execs_started_total{runtime="host"}'), 4);
    assert.equal(value(m, 'taskrouter_execs_finished_total{runtime="host",cause="exited"}'), 1);
    assert.equal(value(m, 'taskrouter_execs_finished_total{runtime="host",cause="signaled"}'), 1);
    assert.equal(value(m, "taskrouter_execs_live"), 2);
    assert.equal(value(m, "taskrouter_tasks_live"), 1);
    assert.equal(value(m, 'taskrouter_exec_start_seconds_count{runtime="host"}'), 4);
    assert.equal(value(m, 'taskrouter_exec_start_seconds_bucket{le="+Inf",runtime="host"}'), 4);
    assert.ok(
      [...m.keys()].some((k) => k.startsWith('taskrouter_exec_start_seconds_bucket{le="0.0005"')),
    );
    assert.equal(value(m, 'taskrouter_output_bytes_total{stream="stdout"}'), 3_000_000);
    assert.equal(value(m, "taskrouter_stdin_bytes_total"), 5);
    assert.equal(value(m, 'taskrouter_output_stream_bytes_per_second_count{stream="stdout"}'), 1);
    assert.ok(value(m, 'taskrouter_output_stream_bytes_per_second_sum{stream="stdout"}') > 0);

    await r.client.writeStdin(task, cat, 5, Buffer.alloc(0), true);
    await r.client.wait(task, cat);
    await r.tasks.terminate(task);
    m = await scrape();
    assert.equal(value(m, 'taskrouter_execs_finished_total{runtime="host",cause="exited"}'), 2);
    assert.equal(
      value(m, 'taskrouter_execs_finished_total{runtime="host",cause="task_terminated"}'),
      1,
    );
    assert.equal(value(m, "taskrouter_execs_live"), 0);
    assert.equal(value(m, "taskrouter_tasks_live"), 0);
    void sleeper;
    // Node's default process metrics come along.
    assert.ok(value(m, "process_resident_memory_bytes") > 0);
  });

  it("counts RPCs by method and code, refusals at the edge included", async () => {
    const t = await r.newTask();
    const before = await scrape();
    await assert.rejects(r.client.poll(t, "no-such-exec"), TaskRouterError);
    const anonymous = new RouterClient(r.address);
    try {
      await assert.rejects(anonymous.poll(t, "x"), (e: TaskRouterError) => {
        assert.equal(e.kind, "Unauthenticated");
        return true;
      });
    } finally {
      anonymous.close();
    }
    const id = await r.client.start(t, ["true"]);
    await r.client.wait(t, id);
    const m = await scrape();
    const delta = (method: string, code: string) =>
      value(m, `taskrouter_rpcs_total{method="${ROUTER}/${method}",code="${code}"}`) -
      value(before, `taskrouter_rpcs_total{method="${ROUTER}/${method}",code="${code}"}`);
    assert.equal(delta("TaskExecPoll", "NOT_FOUND"), 1);
    assert.equal(delta("TaskExecPoll", "UNAUTHENTICATED"), 1);
    assert.equal(delta("TaskExecStart", "OK"), 1);
    assert.ok(delta("TaskExecWait", "OK") >= 1);
    const ok = 'taskrouter_rpcs_total{method="/taskrouter.v1.Tasks/CreateTask",code="OK"}';
    assert.ok(value(m, ok) >= 2, "admin service calls are counted too");
  });

  it("times snapshots and mounts by outcome", async () => {
    const t = await r.newTask();
    const images = new TaskImagesClient(r.client);
    const dir = join(r.dataDir, "tasks", t, "work", "snap");
    await mkdir(dir, { recursive: true });
    await images.snapshotDirectory(t, dir);
    await assert.rejects(images.mount(t, join(dir, "m"), "im-00000000000000000000000000000000"));
    const m = await scrape();
    const count = (op: string, outcome: string) =>
      value(m, `taskrouter_image_operation_seconds_count{op="${op}",outcome="${outcome}"}`);
    assert.equal(count("snapshot_directory", "ok"), 1);
    assert.equal(count("mount", "error"), 1);
  });

  it("answers 404 off /metrics", async () => {
    const res = await fetch(`http://${r.daemon.metricsAddress}/`);
    assert.equal(res.status, 404);
    await res.body?.cancel();
  });
});

describe("metrics off by default", () => {
  it("serves no metrics endpoint without --metrics-listen", async () => {
    const r = await startRouter();
    try {
      assert.equal(r.daemon.metricsAddress, undefined);
    } finally {
      await r.close();
    }
  });
});
