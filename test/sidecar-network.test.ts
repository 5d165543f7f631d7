/**
 * A sidecar's own network policy (TaskContainerCreate `network_access`
 * ALLOWLIST, PROTOCOL-LATER §3.4/§5.8) through the independent grpc-js
 * stack, with real TCP traffic to a service of this machine reached at two
 * addresses: A (the task's gateway) and B (this machine's own address). The
 * task allows A, its sidecar B: each container reaches only its own; a
 * change of the task's policy cuts main's connection to B while the
 * sidecar's stays; the sidecar's rules survive a router restart and go
 * with the sidecar; bad lists are INVALID_ARGUMENT and change nothing; a
 * task that is not `open` refuses it. runc and crun; root, nft, ip,
 * nsenter and a cgroup2 hierarchy required (skipped with the reason).
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { connect } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { scratch } from "./helpers/images.ts";
import { allowlist, connectOnce, EchoService, keepIpForward, ticker } from "./helpers/net.ts";
import { CRUN, removeDataDir, tempDataDir } from "./helpers/runc.ts";
import {
  hostAllow,
  importNetImage,
  ownAddress,
  Router,
  skipReason,
} from "./helpers/sidecar-net.ts";
import { expectStatus, grpc, STDERR, STDOUT } from "./helpers/wire-client.ts";

const ALLOWLIST = 3;

for (const { label, binary } of [
  { label: "runc", binary: "runc" },
  { label: "crun", binary: CRUN },
]) {
  const skip = await skipReason(binary);
  describe(`a sidecar's own network policy (${label})`, { skip }, () => {
    let r: Router;
    let echo: EchoService;
    let img: Awaited<ReturnType<typeof scratch>>;
    let image = "";
    let task = "";
    let side = "";
    let A = "";
    let address = "";
    const B = ownAddress() ?? "";
    let restoreForward: (() => Promise<void>) | undefined;

    before(async () => {
      restoreForward = await keepIpForward();
      echo = await EchoService.start();
      img = await scratch();
      r = new Router(await tempDataDir(), binary);
      await r.start();
      image = await importNetImage(r.client, join(img.dir, "tree"));
      const t = await r.tasks.create(`sidenet-${label}-${process.pid}`, { network: "open" });
      task = t.taskId;
      A = t.networkGateway;
      address = t.networkAddress;
    });
    after(async () => {
      await r?.stop();
      if (r) await removeDataDir(r.dataDir, binary);
      await echo?.close();
      await img?.cleanup();
      await restoreForward?.();
    });

    /** Main's connect to `host` (the host's node in the default root). */
    const fromMain = async (host: string) => (await r.exec(task, connectOnce(host, echo.port))).out;
    /** The sidecar's connect to `host` (its image's static client). */
    const fromSide = async (host: string) =>
      (await r.exec(task, ["/srv/connect", host, String(echo.port)], side)).out;

    it("a sidecar with an allowlist reaches only it; main keeps the task's network", async () => {
      const c = await r.w.unary("TaskContainerCreate", {
        task_id: task,
        image_id: image,
        container_name: "side",
        args: ["sleep", "100000"],
        network_access: { network_access_type: ALLOWLIST, allowed_cidrs: [`${B}/32`] },
      });
      side = c.container_id as string;
      // The task is open (no policy): main reaches both, the sidecar only B.
      assert.equal(await fromMain(A), "connected");
      assert.equal(await fromMain(B), "connected");
      assert.equal(await fromSide(B), "connected");
      assert.equal(await fromSide(A), "ECONNREFUSED");
      const rules = await r.netnsRules(task);
      assert.match(rules, /socket cgroupv2 level 2 "[^"]*\+ctr-[0-9A-Z]{26}"/);

      // The task allows A only: main reaches A, not B; the sidecar still B only.
      await allowlist(r.w, task, [`${A}/32`]);
      assert.equal(await fromMain(A), "connected");
      assert.equal(await fromMain(B), "ECONNREFUSED");
      assert.equal(await fromSide(B), "connected");
      assert.equal(await fromSide(A), "ECONNREFUSED");
      // The host side of the veth allows the union (it cannot tell the containers apart).
      assert.deepEqual(await hostAllow(r.dataDir), [A, B].sort());
    });

    it("a change of the task's policy cuts main's connection, not the sidecar's", async () => {
      await allowlist(r.w, task, ["0.0.0.0/0"]);
      const held = randomUUID();
      await r.w.start({
        task_id: task,
        exec_id: held,
        command_args: ["/srv/connect", B, String(echo.port), "hold"],
        container_id: side,
        stdout_config: STDOUT.PIPE,
        stderr_config: STDERR.STDOUT,
      } as never);
      const mainId = await r.client.start(task, ticker(B, echo.port), {
        stdout: "pipe",
        stderr: "pipe",
      });
      while (echo.sockets.size < 2) await echo.nextData(); // both connected, data flowing
      await allowlist(r.w, task, [`${A}/32`]);
      const cut = await r.client.wait(task, mainId);
      assert.deepEqual(cut, { code: 3 });
      echo.broadcast("bye\n");
      assert.deepEqual(await r.w.wait(task, held), { code: 0 });
      const out = await r.w.readAll({
        task_id: task,
        exec_id: held,
        offset: 0,
        file_descriptor: 0,
      });
      assert.match(out.data.toString(), /^connected\nside\n(.*\n)*bye/);
    });

    it("bad allowlists are INVALID_ARGUMENT and change nothing", async () => {
      const rules = await r.netnsRules(task);
      const bad: [Record<string, unknown>, RegExp][] = [
        [{ network_access_type: ALLOWLIST, allowed_cidrs: ["10.0.0.0/33"] }, /not a CIDR/],
        [{ network_access_type: ALLOWLIST, allowed_cidrs: [`${B}`] }, /not a CIDR/],
        [{ network_access_type: ALLOWLIST, allowed_domains: ["*.example.com"] }, /wildcard/],
        [{ network_access_type: 1, allowed_cidrs: ["10.0.0.0/8"] }, /need network_access_type/],
      ];
      for (const [network_access, re] of bad) {
        await expectStatus(
          r.w.unary("TaskContainerCreate", {
            task_id: task,
            image_id: image,
            container_name: "bad",
            args: ["sleep", "100000"],
            network_access,
          }),
          grpc.status.INVALID_ARGUMENT,
          re,
        );
      }
      const list = await r.w.unary("TaskContainerList", { task_id: task });
      const names = (list.containers as { container_name: string }[]).map((c) => c.container_name);
      assert.deepEqual(names, ["main", "side"]);
      assert.equal(await r.netnsRules(task), rules);
    });

    it("a sidecar's listener takes connections from its allowlist, not the task's", async () => {
      await allowlist(r.w, task, [`${B}/32`]); // the task does not allow A (this machine's gateway)
      const c = await r.w.unary("TaskContainerCreate", {
        task_id: task,
        image_id: image,
        container_name: "in",
        args: ["/srv/connect", "listen", "7400"],
        network_access: { network_access_type: ALLOWLIST, allowed_cidrs: [`${A}/32`] },
      });
      const listening = async () =>
        / 00000000:1CE8 00000000:0000 0A /.test(
          (await r.exec(task, ["cat", "/proc/net/tcp"], side)).out,
        );
      while (!(await listening())) await new Promise((res) => setTimeout(res, 20));
      // From this machine (source A): the SYN-ACK goes out by the connection's mark.
      const got = await new Promise<string>((resolve, reject) => {
        const s = connect(7400, address, () => undefined);
        let data = "";
        s.on("data", (d) => {
          data += d.toString();
        });
        s.on("end", () => resolve(data));
        s.on("error", reject);
      });
      assert.equal(got, "from the sidecar\n");
      await r.w.unary("TaskContainerTerminate", { task_id: task, container_id: c.container_id });
      await allowlist(r.w, task, [`${A}/32`]);
    });

    it("an allowlist needs an open task: FAILED_PRECONDITION naming its network", async () => {
      const plain = (await r.tasks.create(`sidenet-none-${label}-${process.pid}`)).taskId;
      await expectStatus(
        r.w.unary("TaskContainerCreate", {
          task_id: plain,
          image_id: image,
          container_name: "x",
          args: ["sleep", "100000"],
          network_access: { network_access_type: ALLOWLIST, allowed_cidrs: [`${B}/32`] },
        }),
        grpc.status.FAILED_PRECONDITION,
        /network "none".*network "open"/,
      );
      const list = await r.w.unary("TaskContainerList", { task_id: plain });
      assert.equal((list.containers as unknown[]).length, 1);
      await r.tasks.terminate(plain);
    });

    it("the sidecar's rules survive a router restart, and go with the sidecar", async () => {
      await r.stop();
      await r.start();
      // A policy change after the restart rebuilds the table from the records: the sidecar's stay.
      await allowlist(r.w, task, [`${A}/32`]);
      assert.equal(await fromSide(B), "connected");
      assert.equal(await fromSide(A), "ECONNREFUSED");
      assert.equal(await fromMain(B), "ECONNREFUSED");

      await r.w.unary("TaskContainerTerminate", { task_id: task, container_id: side });
      const rules = await r.netnsRules(task);
      assert.doesNotMatch(rules, /cgroupv2|chain s\d+_/);
      assert.match(rules, /chain output/, "the task's own policy stays");
      assert.deepEqual(await hostAllow(r.dataDir), [A]);
      assert.equal(await fromMain(A), "connected");
      assert.equal(await fromMain(B), "ECONNREFUSED");
    });
  });
}
