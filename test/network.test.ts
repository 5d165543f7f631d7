/**
 * Network policy (issue 12 part 3, PROTOCOL-LATER §5.8-5.9): `--network
 * open` tasks reach a TCP service of this machine through their veth;
 * TaskSetNetworkAccess (through the independent grpc-js stack) blocks new
 * connections, cuts established ones, allows what it lists, refuses bad
 * input with the old policy still in force; no task process can lift it;
 * TaskSetOutboundPolicy is FAILED_PRECONDITION; `task rm` removes the veth
 * and the host table. On runc and crun (root only; skipped with the reason).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Task } from "../src/gen/taskrouter/v1/tasks_pb.ts";
import {
  allowlist,
  connectOnce,
  EchoService,
  hostLinks,
  hostTables,
  keepIpForward,
  netToolsMissing,
  ticker,
  vethOf,
} from "./helpers/net.ts";
import { collect, type TestRouter } from "./helpers/router.ts";
import { CRUN, runcSkipReason, runIn, startRuncRouter } from "./helpers/runc.ts";
import { expectStatus, grpc, WireClient } from "./helpers/wire-client.ts";

const variants = [
  { label: "runc", binary: "runc" },
  { label: "crun", binary: CRUN },
];

for (const { label, binary } of variants) {
  const skip = (await runcSkipReason(binary)) ?? (await netToolsMissing());
  describe(`network policy (${label})`, { skip }, () => {
    let r: TestRouter;
    let w: WireClient;
    let echo: EchoService;
    let task: Task;
    let restoreForward: (() => Promise<void>) | undefined;
    before(async () => {
      restoreForward = await keepIpForward();
      r = await startRuncRouter({ ociRuntime: binary });
      w = new WireClient(r.address);
      echo = await EchoService.start();
      task = await r.tasks.create(`net-${label}-${process.pid}`, { network: "open" });
    });
    after(async () => {
      w?.close();
      await echo?.close();
      await r?.close();
      await restoreForward?.();
    });

    const connect = async (host = task.networkGateway) =>
      (await runIn(r, task.taskId, connectOnce(host, echo.port))).stdout.trim();

    it("an open task has an address, a default route via this machine, and reaches it", async () => {
      assert.equal(task.network, "open");
      assert.equal(task.networkPolicy, "open");
      assert.match(task.networkAddress, /^10\.213\.\d+\.\d+$/);
      const route = await runIn(r, task.taskId, ["ip", "route", "show", "default"]);
      assert.match(
        route.stdout,
        new RegExp(`default via ${task.networkGateway.replace(/\./g, "\\.")} dev eth0`),
      );
      assert.equal(await connect(), "connected");
    });

    it("an allowlist that includes the service allows it; one that excludes it blocks new connections", async () => {
      await allowlist(w, task.taskId, [`${task.networkGateway}/32`, "203.0.113.0/24"]);
      let got = await r.tasks.get(task.taskId);
      assert.deepEqual(got.networkAllowedCidrs, [`${task.networkGateway}/32`, "203.0.113.0/24"]);
      assert.match(got.networkPolicy, /^allow: /);
      assert.equal(await connect(), "connected");

      await allowlist(w, task.taskId, ["203.0.113.0/24"]);
      got = await r.tasks.get(task.taskId);
      assert.deepEqual(got.networkAllowedCidrs, ["203.0.113.0/24"]);
      assert.equal(await connect(), "ECONNREFUSED");

      // A wider block that covers it (host bits are cleared: 10.213.9.9/16 is 10.213.0.0/16).
      await allowlist(w, task.taskId, ["10.213.9.9/16"]);
      assert.deepEqual((await r.tasks.get(task.taskId)).networkAllowedCidrs, ["10.213.0.0/16"]);
      assert.equal(await connect(), "connected");
      // An empty allowlist: nothing but loopback.
      await allowlist(w, task.taskId, []);
      assert.equal((await r.tasks.get(task.taskId)).networkPolicy, "allow: nothing");
      assert.equal(await connect(), "ECONNREFUSED");
    });

    it("an established connection to an address no longer allowed stops passing data", async () => {
      await allowlist(w, task.taskId, ["0.0.0.0/0"]);
      const id = await r.client.start(task.taskId, ticker(task.networkGateway, echo.port), {
        stdout: "pipe",
        stderr: "pipe",
      });
      await echo.nextData(); // connected, data flowing
      await allowlist(w, task.taskId, ["203.0.113.0/24"]);
      // Sent once the policy is in force: it must never reach the task's process.
      echo.broadcast("after-policy\n");
      const status = await r.client.wait(task.taskId, id);
      const out = (await collect(r.client.read(task.taskId, id, "stdout"))).toString();
      assert.deepEqual(status, { code: 3 }, out);
      assert.match(out, /error (ECONNRESET|EPIPE)/);
      assert.doesNotMatch(out, /after-policy/);
    });

    it("bad policies are refused and change nothing", async () => {
      await allowlist(w, task.taskId, [`${task.networkGateway}/32`]);
      const bad: [Record<string, unknown>, RegExp][] = [
        [{ network_access_type: 3, allowed_cidrs: ["10.0.0.0/33"] }, /not a CIDR/],
        [{ network_access_type: 3, allowed_cidrs: ["10.0.0.0/8", "nonsense"] }, /not a CIDR/],
        [{ network_access_type: 3, allowed_cidrs: ["10.0.0.1"] }, /not a CIDR/],
        [{ network_access_type: 3, allowed_domains: ["*.example.com"] }, /wildcard/],
        [{ network_access_type: 3, allowed_domains: ["bad domain"] }, /not a domain/],
        [{ network_access_type: 1 }, /must be ALLOWLIST, not OPEN/],
        [{ network_access_type: 2 }, /must be ALLOWLIST, not BLOCKED/],
        [{ network_access_type: 0 }, /must be ALLOWLIST/],
      ];
      for (const [network_access, re] of bad) {
        await expectStatus(
          w.unary("TaskSetNetworkAccess", { task_id: task.taskId, network_access }),
          grpc.status.INVALID_ARGUMENT,
          re,
        );
      }
      await expectStatus(
        w.unary("TaskSetNetworkAccess", { task_id: task.taskId }),
        grpc.status.INVALID_ARGUMENT,
      );
      assert.deepEqual((await r.tasks.get(task.taskId)).networkAllowedCidrs, [
        `${task.networkGateway}/32`,
      ]);
      assert.equal(await connect(), "connected");
      await expectStatus(allowlist(w, "no-such-task", ["10.0.0.0/8"]), grpc.status.NOT_FOUND);
    });

    it("domains are resolved when the policy is set", async () => {
      await allowlist(w, task.taskId, ["203.0.113.0/24"], ["LOCALHOST."]);
      const got = await r.tasks.get(task.taskId);
      assert.deepEqual(got.networkAllowedDomains, ["localhost"]);
      assert.ok(
        got.networkResolvedAddresses.includes("127.0.0.1"),
        got.networkResolvedAddresses.join(),
      );
      assert.equal(got.networkPolicy, "allow: 203.0.113.0/24, localhost");
    });

    it("no task process can lift the policy", async () => {
      await allowlist(w, task.taskId, ["203.0.113.0/24"]);
      const tries = await runIn(r, task.taskId, [
        "sh",
        "-c",
        "nft flush ruleset; echo nft=$?; ip link set eth0 down; echo link=$?;" +
          " ip route replace default via 203.0.113.1 dev eth0 onlink; echo route=$?;" +
          " grep CapEff /proc/self/status",
      ]);
      assert.match(tries.stdout, /nft=1/);
      assert.match(tries.stdout, /link=2/);
      assert.match(tries.stdout, /route=2/);
      const capEff = BigInt(`0x${/CapEff:\s*([0-9a-f]+)/.exec(tries.stdout)?.[1] ?? "0"}`);
      assert.equal(capEff & (1n << 12n), 0n, "CAP_NET_ADMIN must not be held");
      assert.equal(await connect(), "ECONNREFUSED");
    });

    it("TaskSetOutboundPolicy is FAILED_PRECONDITION with its reason", async () => {
      const req = {
        task_id: task.taskId,
        experimental_outbound_policy: {
          header_replacements: [{ domain: "example.com", headers: { "x-a": "b" } }],
        },
      };
      await expectStatus(
        w.unary("TaskSetOutboundPolicy", req),
        grpc.status.FAILED_PRECONDITION,
        /header replacement is set up at creation/,
      );
      await expectStatus(
        w.unary("TaskSetOutboundPolicy", { ...req, task_id: "no-such-task" }),
        grpc.status.NOT_FOUND,
      );
    });

    it("task rm removes the veth and the host table", async () => {
      const t = await r.tasks.create(`net-rm-${label}-${process.pid}`, { network: "open" });
      await allowlist(w, t.taskId, ["203.0.113.0/24"]);
      const veth = vethOf(t.networkGateway);
      const table = (await hostTables()).find((n) => n.endsWith(`_${veth.slice(3)}`));
      assert.ok(table, "the task's host table exists");
      assert.ok((await hostLinks()).includes(veth));
      await r.tasks.terminate(t.taskId);
      assert.ok(!(await hostLinks()).includes(veth), `${veth} left`);
      assert.ok(!(await hostTables()).includes(table), `${table} left`);
    });
  });
}
