/**
 * Modal's own JS SDK (npm `modal` 0.11.1, and 0.10.1 where it has the method),
 * unchanged, against the router for the calls test/modal-sdk.test.ts does not
 * make: `Sandbox.updateNetworkPolicy` (TaskSetNetworkAccess, PROTOCOL-LATER
 * §5.8), `Sandbox.experimentalUpdateOutboundPolicy` (TaskSetOutboundPolicy,
 * §5.9) and `Sandbox.reloadVolumes` (TaskReloadVolumes, §3.5, §5.7), each with
 * its effect seen from inside the task through the SDK's own execs. The SDK
 * finds the tasks through the stand-in control plane
 * (test/helpers/modal-control-plane.ts) as in test/modal-sdk.test.ts.
 *
 * On runc (root, nft, ip and nsenter; skipped with the reason otherwise): a
 * `--network open` task that mounts a volume read-only, and a task without a
 * network that mounts it read-write (the writer of the volume, and the task
 * a network policy is refused on). On the host runtime only the refusal of a
 * network policy, whose path there differs (the runtime cannot enforce one).
 *
 * The router creates no task with an outbound policy (src/tasks/network-policy.ts,
 * refuseOutboundPolicy), so header replacement is not served: the SDK's call
 * is shown refused, FAILED_PRECONDITION, on every task.
 */
import assert from "node:assert/strict";
import { mkdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import type { ModalClient, Sandbox } from "modal";
import { VolumesClient } from "../src/client/volumes.ts";
import type { Task } from "../src/gen/taskrouter/v1/tasks_pb.ts";
import { type ControlPlane, startControlPlane } from "./helpers/modal-control-plane.ts";
import {
  loadSdks,
  modalClient,
  rejectsGrpc,
  routeTask,
  runSdk,
  type Sdk,
} from "./helpers/modal-sdk.ts";
import {
  connectOnce,
  EchoService,
  hostLinks,
  hostTables,
  keepIpForward,
  netToolsMissing,
  ticker,
  vethOf,
} from "./helpers/net.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { runcSkipReason, startRuncRouter } from "./helpers/runc.ts";

// None of this machine's Modal config plays a part (helpers/modal-sdk.ts).
const { current, previous } = await loadSdks();
/** The SDK releases: `outboundPolicy` says whether its Sandbox has experimentalUpdateOutboundPolicy. */
const SDKS: { version: string; sdk: Sdk; outboundPolicy: boolean }[] = [
  { version: "0.11.1", sdk: current, outboundPolicy: true },
  { version: "0.10.1", sdk: previous, outboundPolicy: false },
];

/** V1 sandbox ids (`sb-` and 22 base-62 characters) of the tasks. */
const OPEN_ID = "sb-TaskRouterNetworkOpen1";
const PLAIN_ID = "sb-TaskRouterNetworkNone1";
const HOST_ID = "sb-TaskRouterNetworkHost1";
for (const id of [OPEN_ID, PLAIN_ID, HOST_ID]) assert.match(id, /^sb-[A-Za-z0-9]{22}$/);

/** A documentation range (RFC 5737): nothing there, and never the listener's address. */
const ELSEWHERE = "203.0.113.0/24";

/** Runs every step, even after one failed; throws the first failure. */
async function all(...steps: (() => Promise<unknown> | unknown)[]): Promise<void> {
  let first: { err: unknown } | undefined;
  for (const step of steps) {
    try {
      await step();
    } catch (err) {
      first ??= { err };
    }
  }
  if (first) throw first.err;
}

/** A TCP connect from inside the task (SDK exec): "connected" or the error code (ECONNREFUSED...). */
async function reach(sb: Sandbox, host: string, port: number): Promise<string> {
  const res = await runSdk(sb, connectOnce(host, port));
  const outcome = res.out.trim();
  // connectOnce exits 0 once connected, 4 on a socket error.
  assert.equal(res.code, outcome === "connected" ? 0 : 4, JSON.stringify(res));
  return outcome;
}

/** One SDK release's client and its sandboxes. */
interface Sdks {
  version: string;
  sdk: Sdk;
  outboundPolicy: boolean;
  modal: ModalClient;
  sandboxes: Sandbox[];
}

/** A stand-in control plane for `routes` (sandbox id → task of `r`, task token) and one client per SDK release with those sandboxes, in order. */
async function sdkClients(
  r: TestRouter,
  routes: [sandboxId: string, taskId: string][],
): Promise<{ cp: ControlPlane; clients: Sdks[]; close(): Promise<void> }> {
  const cp = await startControlPlane();
  const clients: Sdks[] = [];
  const close = () =>
    all(
      ...clients.map((c) => () => {
        for (const sb of c.sandboxes) sb.detach();
        c.modal.close();
      }),
      () => cp.close(),
    );
  try {
    for (const [sandboxId, taskId] of routes) await routeTask(cp, r, sandboxId, taskId);
    for (const { version, sdk, outboundPolicy } of SDKS) {
      const modal = modalClient(sdk, cp);
      const c: Sdks = { version, sdk, outboundPolicy, modal, sandboxes: [] };
      clients.push(c);
      for (const [sandboxId] of routes) c.sandboxes.push(await modal.sandboxes.fromId(sandboxId));
    }
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
  return { cp, clients, close };
}

const runcSkip = (await runcSkipReason("runc")) ?? (await netToolsMissing());
// A hang guard for the whole suite (a stalled call must fail it, not hold CI): not a speed goal.
describe("Modal JS SDK: network policy, outbound policy, volume reload (runc)", {
  skip: runcSkip,
  timeout: 120_000,
}, () => {
  let r: TestRouter | undefined;
  let echo: EchoService | undefined;
  let restoreForward: (() => Promise<void>) | undefined;
  let closeClients: (() => Promise<void>) | undefined;
  let cp: ControlPlane;
  let clients: Sdks[];
  /** The `--network open` task: volume `shared` at /data, read-only. */
  let open: Task;
  /** A task without a network of its own: volume `shared` at /vol, read-write. */
  let plain: Task;
  const VOLUME = "shared";

  before(async () => {
    restoreForward = await keepIpForward();
    r = await startRuncRouter({ auth: { mode: "jwt" } });
    echo = await EchoService.start();
    await new VolumesClient(r.client).create(VOLUME);
    open = await r.tasks.create("", {
      network: "open",
      volumes: [{ name: VOLUME, path: "/data", readOnly: true }],
    });
    plain = await r.tasks.create("", { volumes: [{ name: VOLUME, path: "/vol" }] });
    const made = await sdkClients(r, [
      [OPEN_ID, open.taskId],
      [PLAIN_ID, plain.taskId],
    ]);
    ({ cp, clients } = made);
    closeClients = made.close;
  });
  after(async () => {
    const veth = open ? vethOf(open.networkGateway) : undefined;
    await all(
      () => closeClients?.(),
      () => echo?.close(),
      () => r?.close(),
      () => restoreForward?.(),
    );
    // The open task's veth and host table went with the router's close.
    if (veth) {
      assert.ok(!(await hostLinks()).includes(veth), `${veth} left`);
      const left = (await hostTables()).filter((t) => t.endsWith(`_${veth.slice(3)}`));
      assert.deepEqual(left, [], "the task's host table left");
    }
  });

  /** The SDK release's sandboxes: the open task's and the plain task's. */
  const sandboxes = (c: Sdks): { sbOpen: Sandbox; sbPlain: Sandbox } => {
    const [sbOpen, sbPlain] = c.sandboxes;
    assert.ok(sbOpen && sbPlain);
    return { sbOpen, sbPlain };
  };
  const gateway = () => open.networkGateway;
  const listener = (sb: Sandbox) => reach(sb, gateway(), (echo as EchoService).port);
  const get = (task: Task) => (r as TestRouter).tasks.get(task.taskId);

  it("an open task reaches a listener on this machine before any policy", async () => {
    assert.equal(open.networkPolicy, "open");
    const c = clients[0] as Sdks;
    assert.equal(await listener(sandboxes(c).sbOpen), "connected");
  });

  for (const [i, { version }] of SDKS.entries()) {
    it(`updateNetworkPolicy (SDK ${version}): the listener allowed, then not, then again`, async () => {
      const c = clients[i] as Sdks;
      const { sbOpen } = sandboxes(c);
      await sbOpen.updateNetworkPolicy({
        outboundCidrAllowlist: [`${gateway()}/32`, ELSEWHERE],
        outboundDomainAllowlist: [],
      });
      let got = await get(open);
      assert.deepEqual(got.networkAllowedCidrs, [`${gateway()}/32`, ELSEWHERE]);
      assert.equal(await listener(sbOpen), "connected");

      // Neither the CIDRs nor the domain (resolved by the router, to loopback) cover the listener.
      await sbOpen.updateNetworkPolicy({
        outboundCidrAllowlist: [ELSEWHERE],
        outboundDomainAllowlist: ["LOCALHOST."],
      });
      got = await get(open);
      assert.deepEqual(got.networkAllowedCidrs, [ELSEWHERE]);
      assert.deepEqual(got.networkAllowedDomains, ["localhost"]);
      assert.ok(
        got.networkResolvedAddresses.includes("127.0.0.1"),
        got.networkResolvedAddresses.join(),
      );
      assert.equal(await listener(sbOpen), "ECONNREFUSED");

      // Open again, the SDK's way of writing it: an allowlist of everything.
      await sbOpen.updateNetworkPolicy({
        outboundCidrAllowlist: ["0.0.0.0/0", "::/0"],
        outboundDomainAllowlist: [],
      });
      // The router writes IPv6 blocks in full (src/runtime/network/cidr.ts, formatAddress).
      assert.deepEqual((await get(open)).networkAllowedCidrs, ["0.0.0.0/0", "0:0:0:0:0:0:0:0/0"]);
      assert.equal(await listener(sbOpen), "connected");
    });

    it(`updateNetworkPolicy (SDK ${version}): refusals reach the SDK with their codes and change nothing`, async () => {
      const c = clients[i] as Sdks;
      const { sbOpen, sbPlain } = sandboxes(c);
      await sbOpen.updateNetworkPolicy({
        outboundCidrAllowlist: [`${gateway()}/32`],
        outboundDomainAllowlist: [],
      });
      // A bad entry: INVALID_ARGUMENT, the policy in force unchanged.
      await rejectsGrpc(
        sbOpen.updateNetworkPolicy({
          outboundCidrAllowlist: ["10.0.0.0/33"],
          outboundDomainAllowlist: [],
        }),
        grpc.status.INVALID_ARGUMENT,
        /not a CIDR/,
      );
      assert.deepEqual((await get(open)).networkAllowedCidrs, [`${gateway()}/32`]);
      assert.equal(await listener(sbOpen), "connected");
      // A task without a network of its own takes no policy.
      await rejectsGrpc(
        sbPlain.updateNetworkPolicy({
          outboundCidrAllowlist: [ELSEWHERE],
          outboundDomainAllowlist: [],
        }),
        grpc.status.FAILED_PRECONDITION,
        /has network "none": only tasks created with network "open"/,
      );
      const got = await get(plain);
      assert.equal(got.networkPolicy, "");
      assert.deepEqual(got.networkAllowedCidrs, []);
    });
  }

  it("updateNetworkPolicy (SDK 0.11.1): an established connection no longer allowed is cut", async () => {
    const svc = echo as EchoService;
    const { sbOpen } = sandboxes(clients[0] as Sdks);
    await sbOpen.updateNetworkPolicy({
      outboundCidrAllowlist: [`${gateway()}/32`],
      outboundDomainAllowlist: [],
    });
    const data = svc.nextData();
    const p = await sbOpen.exec(ticker(gateway(), svc.port));
    const out = p.stdout.readText();
    try {
      await data; // connected, data flowing
      await sbOpen.updateNetworkPolicy({
        outboundCidrAllowlist: [ELSEWHERE],
        outboundDomainAllowlist: [],
      });
    } catch (err) {
      // The ticker runs on while its connection lives: end it (exit 0) so nothing waits on it.
      for (const s of svc.sockets) s.end();
      throw err;
    }
    // Sent once the policy is in force: it must never reach the task's process.
    svc.broadcast("after-policy\n");
    // The ticker exits 3 on a socket error (0 had the peer ended the connection).
    assert.equal(await p.wait(), 3);
    const text = await out;
    assert.match(text, /error (ECONNRESET|EPIPE)/);
    assert.doesNotMatch(text, /after-policy/);
  });

  it("experimentalUpdateOutboundPolicy (SDK 0.11.1): a static header replacement is refused on every task", async () => {
    const c = clients[0] as Sdks;
    const { sbOpen, sbPlain } = sandboxes(c);
    const before = cp.calls.length;
    const policy = new c.sdk.ExperimentalOutboundPolicy().withHeaderReplacement({
      domain: "api.example.com",
      headers: { "x-api-key": "static-value", authorization: "Bearer $$literal" },
    });
    for (const sb of [sbOpen, sbPlain]) {
      await rejectsGrpc(
        sb.experimentalUpdateOutboundPolicy(policy),
        grpc.status.FAILED_PRECONDITION,
        /was not created with an outbound policy: header replacement is set up at creation/,
      );
    }
    // No secret, so the SDK asked its control plane nothing (an unserved call would have failed it).
    assert.deepEqual(cp.calls.slice(before), []);
    // 0.10.1 has no such method.
    for (const other of clients) {
      const [sb] = other.sandboxes;
      assert.equal(
        typeof (sb as unknown as Record<string, unknown>).experimentalUpdateOutboundPolicy,
        other.outboundPolicy ? "function" : "undefined",
        other.version,
      );
    }
  });

  for (const [i, { version }] of SDKS.entries()) {
    // Local volumes are shared directories: a change shows before any reload, so this shows the
    // call answered and the volume served, not what a reload adds (the refusal below does).
    it(`reloadVolumes (SDK ${version}): answered OK, another task's committed change read`, async () => {
      const c = clients[i] as Sdks;
      const { sbOpen, sbPlain } = sandboxes(c);
      const text = `written through SDK ${version}\n`;
      // The other task writes the file whole, then renames it into place (a committed change).
      const wrote = await runSdk(sbPlain, [
        "sh",
        "-c",
        'printf %s "$1" > /vol/.f.tmp && mv /vol/.f.tmp /vol/f',
        "sh",
        text,
      ]);
      assert.deepEqual(wrote, { code: 0, out: "", err: "" });
      await sbOpen.reloadVolumes();
      assert.deepEqual(await runSdk(sbOpen, ["cat", "/data/f"]), { code: 0, out: text, err: "" });
      // The reader's mount is read-only: the change can only have come from the volume.
      const denied = await runSdk(sbOpen, ["sh", "-c", "echo x > /data/f"]);
      assert.notEqual(denied.code, 0);
      assert.match(denied.err, /read-only/i);
      assert.deepEqual(
        (await get(open)).volumes.map((v) => [v.name, v.path, v.readOnly]),
        [[VOLUME, "/data", true]],
      );
    });
  }

  it("reloadVolumes (SDK 0.11.1): a volume replaced behind the router's back is FAILED_PRECONDITION", async () => {
    const { sbOpen } = sandboxes(clients[0] as Sdks);
    const dir = join((r as TestRouter).dataDir, "volumes", "local", VOLUME);
    await rename(dir, `${dir}.moved`);
    try {
      await mkdir(dir);
      // The task's bind mount still shows the old directory: the reload cannot bring it up to date.
      await rejectsGrpc(
        sbOpen.reloadVolumes(),
        grpc.status.FAILED_PRECONDITION,
        new RegExp(`volume ${VOLUME}: its directory was removed or replaced`),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
      await rename(`${dir}.moved`, dir);
    }
    await sbOpen.reloadVolumes();
    assert.equal((await runSdk(sbOpen, ["cat", "/data/f"])).code, 0);
  });
});

// A hang guard for the whole suite: not a speed goal.
describe("Modal JS SDK: network policy on the host runtime", { timeout: 60_000 }, () => {
  let r: TestRouter | undefined;
  let closeClients: (() => Promise<void>) | undefined;
  let clients: Sdks[];
  let task: string;
  before(async () => {
    r = await startRouter({ auth: { mode: "jwt" } });
    task = await r.newTask();
    const made = await sdkClients(r, [[HOST_ID, task]]);
    clients = made.clients;
    closeClients = made.close;
  });
  after(() =>
    all(
      () => closeClients?.(),
      () => r?.close(),
    ),
  );

  it("updateNetworkPolicy is FAILED_PRECONDITION naming the runtime (both SDKs)", async () => {
    for (const c of clients) {
      const [sb] = c.sandboxes;
      assert.ok(sb);
      await rejectsGrpc(
        sb.updateNetworkPolicy({ outboundCidrAllowlist: [ELSEWHERE], outboundDomainAllowlist: [] }),
        grpc.status.FAILED_PRECONDITION,
        /the host runtime cannot enforce network policies/,
      );
      assert.equal((await (r as TestRouter).tasks.get(task)).networkPolicy, "", c.version);
    }
  });
});
