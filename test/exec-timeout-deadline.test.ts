/**
 * An exec killed by `timeout_secs` ends every stdio stream (all output, then
 * OK) before a client that started its clock when TaskExecStart returned
 * reaches the timeout: the SDKs put exactly that deadline on their reads
 * (PROTOCOL-LATER §5.3). Checked 100 times per runtime through the
 * independent grpc-js stack, in rounds of concurrent execs, against a
 * `taskrouter serve` process (as in production: the router's timers and the
 * client's deadline timers never share one event loop, so a stall of the
 * test's process cannot reorder them).
 * The process may not have started writing before its kill on a loaded
 * machine, so its output is checked as all or nothing.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { TasksClient } from "../src/client/admin.ts";
import { RouterClient } from "../src/client/client.ts";
import { KillableRouter } from "./helpers/killable-router.ts";
import { OCI_RUNTIMES, runcSkipReason } from "./helpers/runc.ts";
import { FD, grpc, STDERR, STDOUT, WireClient } from "./helpers/wire-client.ts";

const ROUNDS = 10;
const PER_ROUND = 10;
const TIMEOUT_SECS = 1;

const variants: { label: string; oci: string | undefined }[] = [
  { label: "host runtime", oci: undefined },
  ...OCI_RUNTIMES.map((o) => ({ label: `runc runtime, ${o.label}`, oci: o.binary })),
];

type ReadFn = (
  req: unknown,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
) => grpc.ClientReadableStream<{ data: Buffer }>;

for (const { label, oci } of variants) {
  const skip = oci ? await runcSkipReason(oci) : undefined;
  describe(`timed-out execs end their streams in time (${label})`, { skip }, () => {
    const r = new KillableRouter(
      oci ? ["--runtime", "runc", "--oci-runtime", oci] : ["--runtime", "host"],
      oci,
    );
    let admin: RouterClient | undefined;
    let w: WireClient;
    let task: string;
    before(async () => {
      const address = await r.start();
      admin = new RouterClient(address);
      w = new WireClient(address);
      task = (await new TasksClient(admin).create("deadline")).taskId;
    });
    after(async () => {
      w?.close();
      // Terminating the task ends its agent and every exec in it.
      if (admin && task) await new TasksClient(admin).terminate(task).catch(() => undefined);
      admin?.close();
      await r.stop();
    });

    /** Reads a whole stream under `deadline` (ms since the epoch); rejects with the call's error. */
    const readBy = async (exec_id: string, fd: number, deadline: number) => {
      const read = (w.raw as unknown as Record<string, ReadFn>).TaskExecStdioRead as ReadFn;
      const call = read.call(
        w.raw,
        { task_id: task, exec_id, offset: 0, file_descriptor: fd },
        new grpc.Metadata(),
        { deadline },
      );
      let text = "";
      for await (const msg of call) text += msg.data.toString();
      return text;
    };

    /** One exec the way the SDK runs it: the clock starts when TaskExecStart returns. */
    const once = async () => {
      const exec_id = randomUUID();
      await w.start({
        task_id: task,
        exec_id,
        command_args: ["sh", "-c", "echo out; echo err >&2; exec sleep 60"],
        stdout_config: STDOUT.PIPE,
        stderr_config: STDERR.PIPE,
        timeout_secs: TIMEOUT_SECS,
      });
      const deadline = Date.now() + TIMEOUT_SECS * 1000;
      const [out, err] = await Promise.all([
        readBy(exec_id, FD.STDOUT, deadline),
        readBy(exec_id, FD.STDERR, deadline),
      ]);
      // A loaded machine may take the whole second to start the command: then it wrote nothing.
      assert.ok(out === "out\n" || out === "", `stdout ${JSON.stringify(out)}`);
      assert.ok(err === "err\n" || err === "", `stderr ${JSON.stringify(err)}`);
      assert.deepEqual(await w.wait(task, exec_id), { signal: 9 });
      if (out !== "") withOutput++;
    };
    let withOutput = 0;

    it(`${ROUNDS * PER_ROUND} execs with timeout_secs ${TIMEOUT_SECS}: streams end before the SDK's deadline`, async () => {
      for (let round = 0; round < ROUNDS; round++) {
        await Promise.all(Array.from({ length: PER_ROUND }, once));
      }
      assert.ok(
        withOutput > 0,
        "no exec got to write before its timeout: the test checked nothing",
      );
    });
  });
}
