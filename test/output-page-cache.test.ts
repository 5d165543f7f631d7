/**
 * The page cache of an agent's output files (docs/DECISIONS.md, "Page cache
 * of the agent's files") through the independent grpc-js stack, host
 * runtime: a stream's bytes are dropped from memory only once every live
 * reader delivered them, never under a slower reader, and the bytes stay
 * readable from disk. Residency is read with util-linux's fincore.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, fsyncSync, openSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { grpc, STDOUT, WireClient } from "./helpers/wire-client.ts";
import { closeChecked, MiB, nextId } from "./helpers/wire-common.ts";

const SIZE = 256 * MiB;

const resident = (path: string) =>
  Number(execFileSync("fincore", ["-b", "-n", "-o", "RES", path], { encoding: "utf8" }));

/** The agent's KEY.out of `task` that holds `size` bytes. */
function outFile(r: TestRouter, task: string, size: number): string {
  const dir = join(r.dataDir, "tasks", task, "agent");
  const name = readdirSync(dir).find(
    (n) => n.endsWith(".out") && statSync(join(dir, n)).size === size,
  );
  assert.ok(name, `no output file of ${size} bytes in ${dir}`);
  return join(dir, name);
}

/** Counts a stream's bytes (all zeros: `head -c … /dev/zero`) from the call's current point. */
async function drain(call: AsyncIterator<{ data: Buffer }>): Promise<number> {
  let n = 0;
  for (;;) {
    const m = await call.next();
    if (m.done) return n;
    assert.ok(
      m.value.data.every((b) => b === 0),
      "a byte that is not the command's",
    );
    n += m.value.data.length;
  }
}

describe("the page cache of agent output files (host runtime)", () => {
  let r: TestRouter;
  let w: WireClient;
  before(async () => {
    r = await startRouter();
    w = new WireClient(r.address);
  });
  after(async () => {
    await closeChecked(r, [w]);
  });

  /**
   * A finished exec of `head -c SIZE /dev/zero`, its KEY.out fsynced: clean pages, which
   * DONTNEED drops at once, so what stays in memory is what was never asked to go.
   */
  async function finishedExec() {
    const task = await r.newTask();
    const exec_id = nextId("pc");
    await w.start({
      task_id: task,
      exec_id,
      command_args: ["head", "-c", String(SIZE), "/dev/zero"],
      stdout_config: STDOUT.PIPE,
    });
    assert.deepEqual(await w.wait(task, exec_id), { code: 0 });
    const out = outFile(r, task, SIZE);
    const fd = openSync(out, "r");
    fsyncSync(fd);
    closeSync(fd);
    const stream = () => w.read({ task_id: task, exec_id });
    return { out, stream, readAll: () => drain(stream()[Symbol.asyncIterator]()) };
  }

  it("drops bytes only once every live reader delivered them; later reads come from disk", async () => {
    const { out, stream, readAll } = await finishedExec();
    assert.ok(resident(out) >= SIZE - 16 * MiB, `${resident(out)} bytes in the page cache`);

    // A stalls after its first message (the transport holds at most its windows, 64 MiB
    // each way); B reads everything meanwhile.
    const slow = stream()[Symbol.asyncIterator]();
    const first = await slow.next();
    assert.equal(first.done, false);
    assert.equal(await readAll(), SIZE);
    const held = resident(out);
    assert.ok(held >= 160 * MiB, `${held} bytes left in the page cache under the slow reader`);

    // A goes on to the end: every byte, and the pages behind it go.
    assert.equal(first.value.data.length + (await drain(slow)), SIZE);
    const left = resident(out);
    assert.ok(left <= 96 * MiB, `${left} bytes still in the page cache after every reader`);

    // Read again from 0: from disk, byte for byte.
    assert.equal(await readAll(), SIZE);
  });

  it("a cancelled reader holds no pages", async () => {
    const { out, stream, readAll } = await finishedExec();
    const call = stream();
    const it = call[Symbol.asyncIterator]();
    assert.equal((await it.next()).done, false);
    call.cancel();
    await assert.rejects(drain(it), (e: grpc.ServiceError) => e.code === grpc.status.CANCELLED);
    assert.equal(await readAll(), SIZE);
    const left = resident(out);
    assert.ok(
      left <= 96 * MiB,
      `${left} bytes still in the page cache: the cancelled reader held them`,
    );
  });
});
