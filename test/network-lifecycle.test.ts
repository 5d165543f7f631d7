/**
 * Network policy across the life of a task (issue 12 part 3): the policy
 * survives a router restart and a container recreated on restart; a
 * restarted router removes host tables and veths no task claims;
 * `serve --task-subnet`; the CLI (`task create --network open`, `task ls`
 * NETWORK); and the refusals of the runtimes that cannot: the host runtime
 * and runsc. Root and runc only where noted (skipped with the reason).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { realpath } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { pino } from "pino";
import { TasksClient } from "../src/client/admin.ts";
import { RouterClient } from "../src/client/client.ts";
import { type Daemon, DEFAULT_CONFIG, startDaemon } from "../src/daemon.ts";
import { runCli } from "./helpers/cli-run.ts";
import {
  allowlist,
  connectOnce,
  EchoService,
  hostLinks,
  hostTables,
  keepIpForward,
  netToolsMissing,
  vethOf,
} from "./helpers/net.ts";
import { startRouter } from "./helpers/router.ts";
import {
  RUNSC,
  removeDataDir,
  runcSkipReason,
  runIn,
  startRuncRouter,
  tempDataDir,
} from "./helpers/runc.ts";
import { expectStatus, grpc, WireClient } from "./helpers/wire-client.ts";

const run = promisify(execFile);

describe("network policy: runtimes that cannot", () => {
  it("the host runtime refuses --network open and policies", async () => {
    const r = await startRouter();
    const w = new WireClient(r.address);
    try {
      await assert.rejects(
        r.tasks.create("", { network: "open" }),
        /enforces no limits or network/,
      );
      const task = await r.newTask();
      await expectStatus(
        allowlist(w, task, ["0.0.0.0/0"]),
        grpc.status.FAILED_PRECONDITION,
        /the host runtime cannot enforce network policies/,
      );
      assert.equal((await r.tasks.get(task)).networkPolicy, "");
    } finally {
      w.close();
      await r.close();
    }
  });

  it("runsc refuses --network open, naming itself and the reason", async (t) => {
    const why = await runcSkipReason(RUNSC);
    if (why) return t.skip(why);
    const r = await startRuncRouter({ ociRuntime: RUNSC });
    try {
      await assert.rejects(
        r.tasks.create("", { network: "open" }),
        /not supported with the runsc OCI runtime: its own network stack/,
      );
    } finally {
      await r.close();
    }
  });

  it("a bad --task-subnet stops the start", async () => {
    for (const taskSubnet of ["10.0.0.0/31", "fd00::/64", "10.0.0.0", "10.0.0.0/7"]) {
      await assert.rejects(
        startDaemon(
          { ...DEFAULT_CONFIG, listen: "127.0.0.1:0", dataDir: "/nonexistent", taskSubnet },
          pino({ level: "silent" }),
        ),
        /task subnet must be an IPv4 CIDR/,
      );
    }
  });
});

const skip = (await runcSkipReason("runc")) ?? (await netToolsMissing());
describe("network policy across router restarts (runc)", { skip }, () => {
  let dataDir: string;
  let daemon: Daemon | undefined;
  let echo: EchoService;
  // A subnet of its own (not the default): --task-subnet is honoured.
  const subnet = `10.214.${process.pid % 250}.0/24`;
  const start = async () => {
    daemon = await startDaemon(
      {
        ...DEFAULT_CONFIG,
        listen: "127.0.0.1:0",
        dataDir,
        auth: { mode: "none" },
        runtime: "runc",
        taskSubnet: subnet,
      },
      pino({ level: "silent" }),
    );
    const client = new RouterClient(daemon.address);
    return { d: daemon, client, tasks: new TasksClient(client), w: new WireClient(daemon.address) };
  };
  const stop = async (s: { d: Daemon; client: RouterClient; w: WireClient }) => {
    s.w.close();
    s.client.close();
    await s.d.close();
    daemon = undefined;
  };
  let restoreForward: (() => Promise<void>) | undefined;
  before(async () => {
    restoreForward = await keepIpForward();
    dataDir = await tempDataDir();
    echo = await EchoService.start();
  });
  after(async () => {
    if (daemon) {
      for (const t of daemon.tasks.list()) await daemon.tasks.terminate(t.id).catch(() => {});
      await daemon.close();
    }
    await echo?.close();
    await removeDataDir(dataDir);
    await restoreForward?.();
  });

  it("keeps the policy, also for a container recreated on restart, and sweeps what no task claims", async () => {
    let s = await start();
    const t = await s.tasks.create("kept", { network: "open" });
    assert.ok(t.networkAddress.startsWith(subnet.replace(/0\/24$/, "")), t.networkAddress);
    const gw = t.networkGateway;
    const connect = async (c: RouterClient) =>
      (await runIn({ client: c }, "kept", connectOnce(gw, echo.port))).stdout.trim();
    await allowlist(s.w, "kept", ["203.0.113.0/24"]);
    assert.equal(await connect(s.client), "ECONNREFUSED");
    await stop(s);

    // What a router that died half way through a removal would leave: a table and a veth.
    const tag = createHash("sha256")
      .update(await realpath(dataDir))
      .digest("hex")
      .slice(0, 10);
    const staleTable = `tr_${tag}_deadbee0`;
    const staleVeth = `trnde${process.pid.toString(16).padStart(6, "0").slice(-6)}`;
    await run("nft", ["add", "table", "inet", staleTable]);
    await run("ip", ["link", "add", staleVeth, "type", "veth", "peer", "name", `${staleVeth}p`]);
    await run("ip", ["link", "set", staleVeth, "alias", `taskrouter ${tag} gone`]);

    s = await start();
    try {
      assert.ok(!(await hostTables()).includes(`inet ${staleTable}`), "stale table swept");
      assert.ok(!(await hostLinks()).includes(staleVeth), "stale veth swept");
      let got = await s.tasks.get("kept");
      assert.deepEqual(got.networkAllowedCidrs, ["203.0.113.0/24"]);
      assert.equal(await connect(s.client), "ECONNREFUSED");
      await allowlist(s.w, "kept", [`${gw}/32`]);
      assert.equal(await connect(s.client), "connected");

      // The container dies while no router runs: the next one makes it again, policy included.
      await stop(s);
      await run("runc", ["--root", join(dataDir, "runc", "state"), "delete", "--force", "kept"]);
      s = await start();
      got = await s.tasks.get("kept");
      assert.deepEqual(got.networkAllowedCidrs, [`${gw}/32`]);
      assert.equal(await connect(s.client), "connected");
      const other = await runIn({ client: s.client }, "kept", connectOnce("203.0.113.1", 9));
      assert.equal(other.stdout.trim(), "ECONNREFUSED");

      const veth = vethOf(got.networkGateway);
      await s.tasks.terminate("kept");
      assert.ok(!(await hostLinks()).includes(veth));
      assert.ok(!(await hostTables()).some((n) => n.startsWith(`inet tr_${tag}_`)));
    } finally {
      await stop(s);
      await run("ip", ["link", "del", staleVeth]).catch(() => undefined);
      await run("nft", ["delete", "table", "inet", staleTable]).catch(() => undefined);
    }
  });

  it("CLI: task create --network open, task ls NETWORK", async () => {
    const s = await start();
    try {
      const cli = async (...args: string[]) => {
        const res = await runCli(["--server", s.d.address, ...args]);
        assert.equal(res.code, 0, res.stderr);
        return res.stdout;
      };
      await cli("task", "create", "--id", "cli-open", "--network", "open");
      await cli("task", "create", "--id", "cli-none");
      await allowlist(s.w, "cli-open", ["203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24"]);
      const rows = (await cli("task", "ls")).trim().split("\n");
      assert.match(rows[0] ?? "", /\sNETWORK\s+VOLUMES$/);
      const row = (id: string) => rows.find((l) => l.startsWith(`${id} `)) ?? "";
      assert.match(
        row("cli-open"),
        /open \(allow: 203\.0\.113\.0\/24, 198\.51\.100\.0\/24, \+1 more\)\s+-$/,
      );
      assert.match(row("cli-none"), /\snone\s+-$/);
      for (const id of ["cli-open", "cli-none"]) await s.tasks.terminate(id);
    } finally {
      await stop(s);
    }
  });
});
