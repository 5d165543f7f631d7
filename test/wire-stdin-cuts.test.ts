/**
 * A 1 GiB upload through TaskExecStdinWriteStream over a connection that is
 * cut every few MiB arrives byte-exact: the client resumes the way the JS
 * SDK does (TaskExecStdinStatus, then a new stream at num_bytes_written),
 * through the independent grpc-js stack and a TCP proxy that cuts.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { startProxy, type TcpProxy } from "./helpers/proxy.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { WireClient } from "./helpers/wire-client.ts";
import { uploadLikeSdk } from "./helpers/wire-stream.ts";

const MiB = 1024 * 1024;

describe("stdin stream resumes across connection cuts", () => {
  let r: TestRouter;
  let proxy: TcpProxy;
  const clients: WireClient[] = [];
  before(async () => {
    r = await startRouter();
    proxy = await startProxy(r.address);
  });
  after(async () => {
    for (const c of clients) c.close();
    await proxy?.close();
    await r?.close();
  });

  it("1 GiB through a connection cut every 48 MiB arrives byte-exact, written once", async () => {
    // 1 GiB of 1 MiB blocks that all differ (a random block with its index stamped in).
    const block = randomBytes(MiB);
    const data = Buffer.allocUnsafe(1024 * MiB);
    for (let i = 0; i < 1024; i++) {
      block.writeUInt32LE(i, 0);
      block.copy(data, i * MiB);
    }
    const want = createHash("sha256").update(data).digest("hex");
    const task = await r.newTask();
    const direct = new WireClient(r.address);
    clients.push(direct);
    const exec_id = randomUUID();
    await direct.start({
      task_id: task,
      exec_id,
      command_args: ["sha256sum"],
      stdout_config: 1,
      stderr_config: 1,
    });
    const stop = proxy.cutEveryUp(48 * MiB);
    const attempts = await uploadLikeSdk(
      () => {
        const c = new WireClient(proxy.address);
        clients.push(c);
        return c;
      },
      task,
      exec_id,
      data,
      1000,
    );
    stop();
    assert.ok(proxy.cuts >= 3, `the proxy cut ${proxy.cuts} times: the test resumed nothing`);
    assert.ok(attempts > 1, "every attempt after a cut resumes");
    assert.deepEqual(await direct.wait(task, exec_id), { code: 0 });
    const out = (await direct.readAll({ task_id: task, exec_id })).data.toString();
    assert.equal(out.split(" ")[0], want);
    const st = await direct.unary("TaskExecStdinStatus", { task_id: task, exec_id });
    assert.equal(Number(st.num_bytes_written), data.length, "every byte written exactly once");
    assert.equal(st.closed, true);
  });
});
