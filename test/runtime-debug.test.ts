import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import type { RouterClient } from "../src/client/client.ts";
import {
  TaskExecStartRequestSchema,
  TaskExecStdoutConfig,
} from "../src/gen/modal_proto/task_command_router_pb.ts";
import type { SpawnSpec } from "../src/runtime/runtime.ts";
import { collect, startRouter, type TestRouter } from "./helpers/router.ts";

/** TaskExecStart with `runtime_debug` (the typed client has no option for it). */
function startDebug(c: RouterClient, taskId: string, execId: string, argv: string[]) {
  return c.unary(
    "taskExecStart",
    create(TaskExecStartRequestSchema, {
      taskId,
      execId,
      commandArgs: argv,
      stdoutConfig: TaskExecStdoutConfig.PIPE,
      runtimeDebug: true,
    }),
  );
}

/** Records the SpawnSpec of every process the router's runtime starts. */
function spySpawns(r: TestRouter): SpawnSpec[] {
  const specs: SpawnSpec[] = [];
  const rt = r.daemon.runtime;
  const spawn = rt.spawn.bind(rt);
  rt.spawn = (taskId, spec) => {
    specs.push(spec);
    return spawn(taskId, spec);
  };
  return specs;
}

describe("runtime_debug", () => {
  let r: TestRouter | undefined;
  afterEach(async () => {
    await r?.close();
    r = undefined;
  });

  it("is refused with PERMISSION_DENIED unless serve --allow-runtime-debug; nothing runs", async () => {
    r = await startRouter({ runtime: "host" });
    const task = await r.newTask();
    const specs = spySpawns(r);
    const marker = join(r.dataDir, "ran");
    await assert.rejects(startDebug(r.client, task, "dbg", ["touch", marker]), (err: unknown) => {
      const e = err as { code: number; message: string };
      assert.equal(e.code, status.PERMISSION_DENIED);
      assert.match(e.message, /--allow-runtime-debug/);
      return true;
    });
    await assert.rejects(r.client.poll(task, "dbg"), { kind: "NotFound" });
    assert.equal(existsSync(marker), false);
    assert.equal(specs.length, 0);
  });

  it("when allowed, the command runs with SpawnSpec.runtimeDebug set (only for that exec)", async () => {
    r = await startRouter({ runtime: "host", allowRuntimeDebug: true });
    const task = await r.newTask();
    const specs = spySpawns(r);
    await startDebug(r.client, task, "dbg", ["echo", "debuggable"]);
    assert.deepEqual(await r.client.wait(task, "dbg"), { code: 0 });
    assert.equal((await collect(r.client.read(task, "dbg", "stdout"))).toString(), "debuggable\n");
    const plain = await r.client.start(task, ["true"]);
    assert.deepEqual(await r.client.wait(task, plain), { code: 0 });
    assert.deepEqual(
      specs.map((s) => s.runtimeDebug === true),
      [true, false],
    );
    // The same exec_id without runtime_debug is a different request.
    await assert.rejects(
      r.client.start(task, ["echo", "debuggable"], { execId: "dbg", stdout: "pipe" }),
      {
        kind: "AlreadyExists",
      },
    );
  });
});
