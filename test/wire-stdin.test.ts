/**
 * Wire compatibility (TaskExecStdinWrite): drives the router only through an independent gRPC
 * stack (@grpc/grpc-js + @grpc/proto-loader on the project's .proto files), as
 * the protocol's existing grpc-js clients do. Tasks are created with the
 * project's admin client; every TaskCommandRouter call goes through proto-loader.
 * Covers SPEC: TaskExecStdinWrite. Shared helpers: test/helpers/wire-common.ts.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { type Exit, expectStatus, grpc, STDOUT, WireClient } from "./helpers/wire-client.ts";
import { closeChecked, MiB, nextId, text } from "./helpers/wire-common.ts";

const { status } = grpc;

describe("wire: TaskExecStdinWrite", () => {
  let r: TestRouter;
  let w: WireClient;
  let task: string;
  before(async () => {
    r = await startRouter();
    w = new WireClient(r.address);
    task = await r.newTask();
  });
  after(() => closeChecked(r, [w]));

  const start = async (argv: string[]) => {
    const exec_id = nextId("in");
    await w.start({ task_id: task, exec_id, command_args: argv, stdout_config: STDOUT.PIPE });
    return exec_id;
  };
  const write = (exec_id: string, offset: number, data: string, eof = false) =>
    w.write({ task_id: task, exec_id, offset, data: Buffer.from(data), eof });
  const finish = async (exec_id: string): Promise<[Exit, string]> => [
    await w.wait(task, exec_id),
    text((await w.readAll({ task_id: task, exec_id })).data),
  ];

  it("drops the bytes already written: abc@0 then abcdef@0 then defghi@3 → abcdefghi", async () => {
    const e = await start(["cat"]);
    await write(e, 0, "abc");
    await write(e, 0, "abcdef");
    await write(e, 3, "defghi");
    await write(e, 0, "abc"); // a late retry of the first write
    await write(e, 9, "", true);
    assert.deepEqual(await finish(e), [{ code: 0 }, "abcdefghi"]);
  });

  it("an offset past the bytes written gets OUT_OF_RANGE and changes nothing", async () => {
    const e = await start(["cat"]);
    await write(e, 0, "ab");
    await expectStatus(write(e, 5, "zz"), status.OUT_OF_RANGE);
    await expectStatus(write(e, 3, "", true), status.OUT_OF_RANGE);
    await expectStatus(
      w.write({
        task_id: task,
        exec_id: e,
        offset: "18446744073709551615" as unknown as number,
        data: Buffer.from("q"),
      }),
      status.OUT_OF_RANGE,
    );
    await write(e, 2, "cd", true);
    assert.deepEqual(await finish(e), [{ code: 0 }, "abcd"]);
  });

  it("EOF rules: EOF twice OK, EOF-only with offset 0 OK, a retry of old data OK, new data FAILED_PRECONDITION", async () => {
    const e = await start(["cat"]);
    await write(e, 0, "hello", true);
    await write(e, 5, "", true);
    await write(e, 0, "", true);
    await write(e, 0, "", false);
    await write(e, 0, "hello", true);
    await expectStatus(write(e, 5, "!"), status.FAILED_PRECONDITION);
    await expectStatus(write(e, 0, "hello!", true), status.FAILED_PRECONDITION);
    assert.deepEqual(await finish(e), [{ code: 0 }, "hello"]);
  });

  it("a write to a command that has exited is dropped with OK", async () => {
    const e = await start(["true"]);
    assert.deepEqual(await w.wait(task, e), { code: 0 });
    await write(e, 0, "data");
    await write(e, 0, "data", true);
    await write(e, 0, "", true);
    const never = await start(["sh", "-c", "exec 0<&-; exit 3"]); // closed its stdin itself
    assert.deepEqual(await w.wait(task, never), { code: 3 });
    await write(never, 0, "x".repeat(1 << 20), true);
  });

  it("a 16 MiB write in one message reaches the command whole", async () => {
    const e = await start(["wc", "-c"]);
    const data = randomBytes(16 * MiB);
    await w.write({ task_id: task, exec_id: e, offset: 0, data, eof: true });
    const [exit, out] = await finish(e);
    assert.deepEqual(exit, { code: 0 });
    assert.equal(out.trim(), String(16 * MiB));
  });

  it("many writes by offset arrive in order, byte-exact", async () => {
    const e = await start(["sha256sum"]);
    const data = randomBytes(4 * MiB + 333);
    for (let off = 0; off < data.length; off += 64 * 1024 + 7) {
      await w.write({
        task_id: task,
        exec_id: e,
        offset: off,
        data: data.subarray(off, off + 64 * 1024 + 7),
      });
    }
    await w.write({ task_id: task, exec_id: e, offset: data.length, eof: true });
    const [exit, out] = await finish(e);
    assert.deepEqual(exit, { code: 0 });
    assert.equal(out.split(" ")[0], createHash("sha256").update(data).digest("hex"));
  });

  it("NOT_FOUND for an unknown task or exec", async () => {
    await expectStatus(
      w.write({ task_id: "no-such-task", exec_id: "x", offset: 0, eof: true }),
      status.NOT_FOUND,
    );
    await expectStatus(
      w.write({ task_id: task, exec_id: "no-such-exec", offset: 0, eof: true }),
      status.NOT_FOUND,
    );
  });
});
