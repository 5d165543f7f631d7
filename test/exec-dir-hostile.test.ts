import assert from "node:assert/strict";
import { existsSync, lstatSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { TasksClient } from "../src/client/admin.ts";
import { RouterClient } from "../src/client/client.ts";
import { ExecsClient } from "../src/client/execs.ts";
import {
  agentDir,
  errorKind,
  keyOf,
  killAgents,
  markerFile,
  PLANTS,
  plant,
  servesOther,
} from "./helpers/hostile-dir.ts";
import { KillableRouter } from "./helpers/killable-router.ts";
import { collect } from "./helpers/router.ts";
import { runcSkipReason } from "./helpers/runc.ts";
import { expectStatus, FD, grpc, WireClient } from "./helpers/wire-client.ts";

/**
 * A task's exec directory filled with symlinks, FIFOs and device nodes by a
 * process of the task (one that took over its agent): the router, a real
 * `taskrouter serve` process running as root, never follows a link to this
 * machine's files, never opens a FIFO or a device, answers FAILED_PRECONDITION
 * (or UNAVAILABLE for a broken agent connection) and keeps serving the other
 * tasks (checked by a call to another task completing, never by timing).
 * docs/DECISIONS.md, "The exec directory is hostile input (router side)".
 */
const root = process.getuid?.() === 0;
const VARIANTS = [
  {
    runtime: "host" as const,
    skip: root ? undefined : "needs root: the router's side of a root task agent",
  },
  { runtime: "runc" as const, skip: await runcSkipReason() },
];
/** A hang guard per test (a blocked router would hang the call): not a timing assertion. */
const timeout = 120_000;

for (const v of VARIANTS) {
  if (v.skip) console.log(`# exec-dir-hostile (${v.runtime}) skipped: ${v.skip}`);
  describe(`a hostile exec directory (${v.runtime} runtime)`, { skip: v.skip }, () => {
    const router = new KillableRouter(
      ["--runtime", v.runtime],
      v.runtime === "runc" ? "runc" : undefined,
    );
    let c: RouterClient;
    let address = "";
    const marker = markerFile();
    const orphans: number[] = [];
    const dir = (task: string) => agentDir(router.dataDir as string, task, v.runtime);

    before(async () => {
      address = await router.start();
      c = new RouterClient(address);
      for (const t of ["a", "b"]) await new TasksClient(c).create(t);
      await servesOther(c, "a");
      await servesOther(c, "b");
    });
    after(async () => {
      for (const pid of orphans) {
        try {
          process.kill(-pid, "SIGKILL");
        } catch {
          // ended
        }
      }
      for (const t of ["a", "b"]) await new TasksClient(c).terminate(t).catch(() => undefined);
      c?.close();
      await router.stop();
      marker.cleanup();
    });

    for (const kind of PLANTS) {
      it(`KEY.out as a ${kind}: the read is FAILED_PRECONDITION, no host byte read`, {
        timeout,
      }, async () => {
        const id = await c.start("a", ["sh", "-c", "echo hello; echo oops >&2"], {
          stdout: "pipe",
          stderr: "pipe",
        });
        assert.deepEqual(await c.wait("a", id), { code: 0 });
        const d = dir("a");
        const key = keyOf(d, id);
        plant(join(d, `${key}.out`), kind, marker.path);
        assert.equal(await errorKind(collect(c.read("a", id, "stdout"))), "FailedPrecondition");
        assert.equal((await collect(c.read("a", id, "stderr"))).toString(), "oops\n");
        assert.ok(marker.intact());
        await servesOther(c, "b");
      });

      for (const file of ["in", "inlen"]) {
        it(`KEY.${file} as a ${kind}: stdin writes are FAILED_PRECONDITION, nothing written there`, {
          timeout,
        }, async () => {
          const id = await c.start("a", ["cat"], { stdout: "pipe" });
          const d = dir("a");
          const key = keyOf(d, id);
          plant(join(d, `${key}.${file}`), kind, marker.path);
          // A ring KEY.in is the task's spare renamed, when there is one: that name too.
          if (file === "in") plant(join(d, "stdin-spare"), kind, marker.path);
          const write = c.writeStdin("a", id, 0, Buffer.from("client stdin bytes\n"));
          assert.equal(await errorKind(write), "FailedPrecondition");
          assert.ok(marker.intact());
          await servesOther(c, "b");
          await new ExecsClient(c).signal("a", id, "SIGKILL");
          assert.deepEqual(await c.wait("a", id), { signal: 9 });
        });
      }
    }

    it("an entrypoint's KEY.out as a symlink: SandboxStdioReadV2 is FAILED_PRECONDITION", {
      timeout,
    }, async () => {
      await new TasksClient(c).create("e", {
        entrypoint: ["sh", "-c", "echo hi; exec sleep 1000"],
      });
      const w = new WireClient(address);
      try {
        const d = dir("e");
        const line = readFileSync(join(d, "execs.journal"), "utf8")
          .split("\n")
          .find((l) => l.endsWith('{"v":1,"kind":"entrypoint"}'));
        const out = join(d, `${line?.slice(1, 33)}.out`);
        // Planted over the agent's file once it made it (at the first byte, "hi"): planted
        // before, the agent's own open is refused and the stream waits, with no read to refuse.
        while (!existsSync(out)) await sleep(10); // bounded by the test's timeout
        plant(out, "symlink", marker.path);
        const read = async () => {
          for await (const _ of w.sandboxRead({
            task_id: "e",
            offset: 0,
            file_descriptor: FD.STDOUT,
          }));
        };
        await expectStatus(read(), grpc.status.FAILED_PRECONDITION);
        assert.ok(marker.intact());
        await servesOther(c, "b");
      } finally {
        w.close();
        await new TasksClient(c).terminate("e");
      }
    });

    if (v.runtime !== "host") return; // below: agents killed by pid (host agents only)

    for (const kind of PLANTS) {
      it(`agent.sock as a ${kind} (a symlink: to another task's agent): never connected to`, {
        timeout,
      }, async () => {
        const [da, db] = [dir("a"), dir("b")];
        await servesOther(c, "b"); // b's agent listens
        assert.ok(killAgents(da).length > 0, "a's agent ran");
        plant(join(da, "agent.sock"), kind, join(db, "agent.sock"));
        const id = await c.start("a", ["echo", "in a"], { stdout: "pipe" });
        assert.deepEqual(await c.wait("a", id), { code: 0 });
        assert.equal((await collect(c.read("a", id, "stdout"))).toString(), "in a\n");
        const key = keyOf(da, id);
        assert.ok(existsSync(join(da, `${key}.out`)), "a's own agent ran it");
        assert.ok(!existsSync(join(db, `${key}.out`)), "b's agent never saw it");
        assert.ok(lstatSync(join(da, "agent.sock")).isSocket(), "a new agent of a's listens");
        await servesOther(c, "b");
      });

      it(`exits as a ${kind}: the execs of a dead agent end SIGKILLed, the router serves on`, {
        timeout,
      }, async () => {
        const d = dir("a");
        const id = await c.start("a", ["sleep", "1000"], { stdout: "pipe" });
        orphans.push((await new ExecsClient(c).inspect("a", id)).pid as number);
        // What a symlink would make the router believe: a host file saying `code 42`.
        const fake = `${marker.path}.exits`;
        writeFileSync(fake, `${keyOf(d, id)} code 42 1\n`);
        plant(join(d, "exits"), kind, fake);
        killAgents(d);
        assert.deepEqual(await c.wait("a", id), { signal: 9 });
        await servesOther(c, "b");
        unlinkSync(join(d, "exits")); // a new agent makes its own
        unlinkSync(fake);
        await servesOther(c, "a");
      });
    }

    // The request went out to whatever listens, which may have started it: the start stands
    // and the exec ends as SIGKILLed with its agent (run at most once), as for a dead agent.
    it("an agent line past 4 KiB without a newline drops the connection; the exec is lost", {
      timeout,
    }, async () => {
      const d = dir("a");
      await servesOther(c, "a");
      killAgents(d);
      unlinkSync(join(d, "agent.sock"));
      // A fake agent: a line that never ends, written until the router hangs up (or 256 MiB).
      const LIMIT = 256 * 1024 * 1024;
      let sent = 0;
      let hungUp = 0;
      const chunk = Buffer.alloc(64 * 1024, "x");
      const fake: Server = createServer((sock) => {
        sock.on("error", () => {});
        sock.on("close", () => hungUp++);
        const pump = () => {
          while (!sock.destroyed && sent < LIMIT) {
            sent += chunk.length;
            if (!sock.write(chunk)) return void sock.once("drain", pump);
          }
        };
        pump();
      });
      await new Promise<void>((resolve) => fake.listen(join(d, "agent.sock"), resolve));
      try {
        const id = await c.start("a", ["echo", "x"], { stdout: "pipe" });
        assert.deepEqual(await c.wait("a", id), { signal: 9 });
        assert.ok(hungUp > 0, "the router closed the connection");
        assert.ok(sent < LIMIT, `the router stopped taking bytes (${sent} sent)`);
        await servesOther(c, "b");
      } finally {
        await new Promise((resolve) => fake.close(resolve));
      }
      await servesOther(c, "a"); // a real agent again
    });
  });
}
