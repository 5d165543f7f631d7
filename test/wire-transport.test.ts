/**
 * Wire compatibility (transport, task teardown, router shutdown): drives the router only through an independent gRPC
 * stack (@grpc/grpc-js + @grpc/proto-loader on the project's .proto files), as
 * the protocol's existing grpc-js clients do. Tasks are created with the
 * project's admin client; every TaskCommandRouter call goes through proto-loader.
 * Covers SPEC: Transport; task teardown and router shutdown. Shared helpers: test/helpers/wire-common.ts.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { startH2Proxy } from "./helpers/h2-proxy.ts";
import { liveInSessions, startRouter, type TestRouter } from "./helpers/router.ts";
import { expectStatus, FD, grpc, healthCheck, STDOUT, WireClient } from "./helpers/wire-client.ts";
import {
  closeChecked,
  leaders,
  MiB,
  nextId,
  stillAliveAfterKill,
  text,
  tracked,
} from "./helpers/wire-common.ts";

const { status } = grpc;

describe("wire: task teardown", () => {
  let r: TestRouter;
  let w: WireClient;
  before(async () => {
    r = await startRouter();
    w = new WireClient(r.address);
  });
  after(() => closeChecked(r, [w]));

  it("terminating a task kills its execs' groups; then Start is FAILED_PRECONDITION and the rest NOT_FOUND", async () => {
    const task = await r.newTask();
    const exec_id = nextId("td");
    await w.start({
      task_id: task,
      exec_id,
      command_args: ["sh", "-c", "sleep 100 & echo $$ $!; wait"],
      stdout_config: STDOUT.PIPE,
    });
    let line = "";
    const stream = w.read({ task_id: task, exec_id, file_descriptor: FD.STDOUT });
    for await (const msg of stream) {
      line += text(msg.data);
      if (line.includes("\n")) break;
    }
    const m = /^(\d+) (\d+)\n$/.exec(line);
    assert.ok(m, line);
    const pending = w.wait(task, exec_id);
    assert.equal(await w.poll(task, exec_id), undefined);
    await r.tasks.terminate(task);
    assert.deepEqual(await pending, { signal: 9 });
    for (const pid of [Number(m[1]), Number(m[2])])
      assert.equal(await stillAliveAfterKill(pid), false);

    const e = await expectStatus(
      w.start({ task_id: task, exec_id: nextId("td"), command_args: ["true"] }),
      status.FAILED_PRECONDITION,
    );
    assert.ok(e.details.includes(task), e.details);
    await expectStatus(w.poll(task, exec_id), status.NOT_FOUND);
    await expectStatus(w.wait(task, exec_id), status.NOT_FOUND);
    await expectStatus(w.readAll({ task_id: task, exec_id }), status.NOT_FOUND);
    await expectStatus(
      w.write({ task_id: task, exec_id, offset: 0, data: Buffer.from("x") }),
      status.NOT_FOUND,
    );
  });
});

describe("wire: transport", () => {
  let r: TestRouter;
  let w: WireClient;
  let task: string;
  before(async () => {
    r = await startRouter();
    w = new WireClient(r.address);
    task = await r.newTask();
  });
  after(() => closeChecked(r, [w]));

  it("accepts a 100 MiB request message (one stdin write of 100 MiB into wc -c)", async () => {
    const exec_id = nextId("big-in");
    await w.start({
      task_id: task,
      exec_id,
      command_args: ["wc", "-c"],
      stdout_config: STDOUT.PIPE,
    });
    await w.write({
      task_id: task,
      exec_id,
      offset: 0,
      data: Buffer.alloc(100 * MiB, 0x61),
      eof: true,
    });
    assert.deepEqual(await w.wait(task, exec_id), { code: 0 });
    assert.equal(
      text((await w.readAll({ task_id: task, exec_id })).data).trim(),
      String(100 * MiB),
    );
  });

  it("tolerates keepalive pings with no call open: no GOAWAY, the channel stays READY", async (t) => {
    const proxy = await startH2Proxy(r.address);
    const kw = new WireClient(proxy.address, {
      "grpc.keepalive_time_ms": 200,
      // Generous: a stalled test process must not drop the transport (an unanswered ping
      // still shows as pings without acks below).
      "grpc.keepalive_timeout_ms": 20_000,
      "grpc.keepalive_permit_without_calls": 1,
    });
    try {
      await expectStatus(kw.poll(task, "no-such-exec"), status.NOT_FOUND); // connects
      const channel = kw.raw.getChannel();
      const states: string[] = [];
      let watching = true;
      const watch = (from: grpc.connectivityState) => {
        channel.watchConnectivityState(from, Date.now() + 60_000, () => {
          if (!watching) return;
          const now = channel.getConnectivityState(false);
          states.push(grpc.connectivityState[now]);
          watch(now);
        });
      };
      assert.equal(channel.getConnectivityState(false), grpc.connectivityState.READY);
      watch(grpc.connectivityState.READY);
      await sleep(3000); // idle, no call open
      const exec_id = nextId("ka");
      await kw.start({
        task_id: task,
        exec_id,
        command_args: ["echo", "still here"],
        stdout_config: STDOUT.PIPE,
      });
      assert.deepEqual(await kw.wait(task, exec_id), { code: 0 });
      assert.equal(text((await kw.readAll({ task_id: task, exec_id })).data), "still here\n");
      watching = false;
      assert.deepEqual(states, [], "the channel left READY while idle");
      assert.ok(proxy.clientPings >= 2, `the client pinged (${proxy.clientPings} pings)`);
      assert.ok(proxy.serverPingAcks >= proxy.clientPings - 1, "the router answered the pings");
      t.diagnostic(`${proxy.clientPings} pings, ${proxy.serverPingAcks} acks, states ${states}`);
      assert.equal(proxy.serverGoaways, 0, "the router sent GOAWAY");
    } finally {
      kw.close();
      await proxy.close();
    }
  });

  it("serves grpc.health.v1.Health/Check: SERVING for the empty service name", async () => {
    assert.equal(await healthCheck(r.address, ""), "SERVING");
    await expectStatus(healthCheck(r.address, "no.such.Service"), status.NOT_FOUND);
  });

  it("an unknown method of the service gets UNIMPLEMENTED", async () => {
    const err = await new Promise<grpc.ServiceError | null>((resolve) => {
      w.raw.makeUnaryRequest(
        "/modal.task_command_router.TaskCommandRouter/NoSuchRpc",
        (x: Buffer) => x,
        (x: Buffer) => x,
        Buffer.alloc(0),
        (e) => resolve(e),
      );
    });
    assert.equal(err?.code, status.UNIMPLEMENTED);
  });
});

describe("wire: router shutdown", () => {
  let r: TestRouter | undefined;
  let w: WireClient;
  before(async () => {
    r = await startRouter();
    w = new WireClient(r.address);
  });
  after(() => closeChecked(r, [w]));

  it("ends open Wait and Read calls with UNAVAILABLE and leaves no process behind", async () => {
    const router = r as TestRouter;
    const task = await router.newTask();
    const exec_id = nextId("sd");
    await w.start({
      task_id: task,
      exec_id,
      command_args: ["sh", "-c", "sleep 100 & echo $$ $!; wait"],
      stdout_config: STDOUT.PIPE,
    });
    let line = "";
    const stream = w.read({ task_id: task, exec_id });
    const firstLine = new Promise<void>((res) => {
      stream.on("data", (m: { data: Buffer }) => {
        line += text(m.data);
        if (line.includes("\n")) res();
      });
    });
    const streamStatus = new Promise<grpc.status>((res) => {
      stream.on("status", (s: grpc.StatusObject) => res(s.code));
      stream.on("error", () => {}); // the code is checked through "status"
    });
    const waiting = tracked(w.wait(task, exec_id));
    await firstLine;
    const m = /^(\d+) (\d+)\n$/.exec(line);
    assert.ok(m, line);
    assert.equal(await w.poll(task, exec_id), undefined);
    const pids = leaders(router);
    await router.close();
    r = undefined;
    await expectStatus(waiting.promise, status.UNAVAILABLE);
    assert.equal(await streamStatus, status.UNAVAILABLE);
    for (const pid of [Number(m[1]), Number(m[2])])
      assert.equal(await stillAliveAfterKill(pid), false);
    assert.deepEqual(await liveInSessions(pids), []);
  });
});
