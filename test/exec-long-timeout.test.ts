/**
 * TaskExecStart with a `timeout_secs` past setTimeout's limit (~24.9 days;
 * the JS SDK sends timeoutMs/1000, so 30 days gets there) does not kill the
 * command: neither when it starts nor when a restarted router adopts it
 * (both arm the same timer, src/exec/exec.ts). Node runs a longer plain
 * setTimeout after 1 ms, so without the fix each command here would end by
 * signal 9 long before it could print "alive". Through the independent
 * grpc-js stack against a real `taskrouter serve`, host and runc.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { TasksClient } from "../src/client/admin.ts";
import { RouterClient } from "../src/client/client.ts";
import { KillableRouter } from "./helpers/killable-router.ts";
import { runcSkipReason } from "./helpers/runc.ts";
import { FD, STDERR, STDOUT, WireClient } from "./helpers/wire-client.ts";

/** ~34.7 days: past 2^31-1 ms. */
const LONG = 3_000_000;

const VARIANTS = [
  { label: "host runtime", args: ["--runtime", "host"], oci: undefined },
  { label: "runc runtime", args: ["--runtime", "runc"], oci: "runc" },
];

for (const v of VARIANTS) {
  const skip = v.oci ? await runcSkipReason(v.oci) : undefined;
  describe(`timeout_secs ${LONG} does not kill the exec (${v.label})`, { skip }, () => {
    const router = new KillableRouter(v.args, v.oci);
    let admin: RouterClient | undefined;
    let w: WireClient | undefined;
    const serve = async () => {
      const address = await router.start();
      admin = new RouterClient(address);
      w = new WireClient(address);
      return w;
    };
    after(async () => {
      w?.close();
      if (admin) await new TasksClient(admin).terminate("t").catch(() => undefined);
      admin?.close();
      await router.stop();
    });

    const out = async (c: WireClient, exec_id: string) =>
      (await c.readAll({ task_id: "t", exec_id, file_descriptor: FD.STDOUT })).data.toString();

    it("runs to its end, also after a router restart adopted it", {
      timeout: 120_000,
    }, async () => {
      let c = await serve();
      await new TasksClient(admin as RouterClient).create("t");
      const base = {
        task_id: "t",
        stdout_config: STDOUT.PIPE,
        stderr_config: STDERR.PIPE,
        timeout_secs: LONG,
      };
      await c.start({
        ...base,
        exec_id: "sleeper",
        command_args: ["sh", "-c", "sleep 1; echo alive"],
      });
      assert.deepEqual(await c.wait("t", "sleeper"), { code: 0 });
      assert.equal(await out(c, "sleeper"), "alive\n");

      // Blocks on stdin until the restarted router (which adopted it) gets the input.
      await c.start({
        ...base,
        exec_id: "reader",
        command_args: ["sh", "-c", "read x; echo alive $x"],
      });
      await router.kill9();
      c.close();
      admin?.close();
      c = await serve();
      await c.write({
        task_id: "t",
        exec_id: "reader",
        offset: 0,
        data: Buffer.from("x\n"),
        eof: true,
      });
      assert.deepEqual(await c.wait("t", "reader"), { code: 0 });
      assert.equal(await out(c, "reader"), "alive x\n");
    });
  });
}
