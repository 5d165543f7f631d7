import assert from "node:assert/strict";
import { appendFileSync, lstatSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { TasksClient } from "../src/client/admin.ts";
import { RouterClient } from "../src/client/client.ts";
import { ExecsClient } from "../src/client/execs.ts";
import { TaskState } from "../src/gen/taskrouter/v1/tasks_pb.ts";
import {
  agentDir,
  errorKind,
  keyOf,
  markerFile,
  PLANTS,
  plant,
  servesOther,
} from "./helpers/hostile-dir.ts";
import { KillableRouter } from "./helpers/killable-router.ts";

/**
 * What a router reads back from a task's exec directory when it starts (the
 * exec journal, KEY.inlen, `exits`) is hostile input too: a task that
 * poisoned or replaced it never stops the router from starting or serving the
 * other tasks, and nothing outside the directory is read or written. The
 * router is a real `taskrouter serve` process, SIGKILLed and started again on
 * its data dir (host tasks: their agents outlive it).
 * docs/DECISIONS.md, "The exec directory is hostile input (router side)".
 */
const skip = process.getuid?.() === 0 ? undefined : "needs root: device nodes, other agents";
if (skip) console.log(`# exec-dir-restart skipped: ${skip}`);
/** A hang guard per test (a router blocked at its start would never answer): not a timing assertion. */
const timeout = 120_000;

describe("a hostile exec directory at a router's start", { skip }, () => {
  const router = new KillableRouter(["--runtime", "host"]);
  let c: RouterClient | undefined;
  const marker = markerFile();
  const tasks = new Set<string>();
  const orphans: number[] = [];
  const dir = (task: string) => agentDir(router.dataDir as string, task, "host");

  const serve = async (): Promise<RouterClient> => {
    c?.close();
    c = new RouterClient(await router.start());
    return c;
  };
  const restart = async (change: () => void): Promise<RouterClient> => {
    await router.kill9();
    change();
    return serve();
  };
  const newTask = async (cl: RouterClient, id: string) => {
    await new TasksClient(cl).create(id);
    tasks.add(id);
    await servesOther(cl, id);
  };
  /** A long-running exec of `task` (a live journal entry), its pid ended after the suite. */
  const sleeper = async (cl: RouterClient, task: string): Promise<string> => {
    const id = await cl.start(task, ["sleep", "1000"], { stdout: "pipe" });
    orphans.push((await new ExecsClient(cl).inspect(task, id)).pid as number);
    return id;
  };

  before(async () => {
    await newTask(await serve(), "other");
  });
  after(async () => {
    for (const pid of orphans) {
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        // ended
      }
    }
    if (c) for (const t of tasks) await new TasksClient(c).terminate(t).catch(() => undefined);
    c?.close();
    await router.stop();
    marker.cleanup();
  });

  it("null and garbage exec records: skipped, the task and the others serve", {
    timeout,
  }, async () => {
    let cl = c as RouterClient;
    await newTask(cl, "p");
    await sleeper(cl, "p");
    const k = (n: number) => n.toString(16).padStart(32, "e");
    const records = [
      "null",
      "[1,2]",
      '"text"',
      "42",
      '{"v":1,"request":null}',
      '{"v":1,"execId":"x","fingerprint":"f","startedAt":1,"request":{"execId":"x","argv":null}}',
      '{"v":1,"execId":"y","fingerprint":"f","startedAt":1,"request":{"execId":"y","argv":[],"pty":7}}',
    ];
    cl = await restart(() => {
      const d = dir("p");
      appendFileSync(
        join(d, "execs.journal"),
        `${records.map((r, i) => `+${k(i)} ${r}\n`).join("")}garbage line\n`,
      );
      // Ended execs the agent reported: their records are read (not dropped as never started).
      appendFileSync(join(d, "exits"), records.map((_, i) => `${k(i)} code 0 1\n`).join(""));
    });
    const p = await new TasksClient(cl).get("p");
    assert.equal(p.state, TaskState.RUNNING);
    await servesOther(cl, "p");
    await servesOther(cl, "other");
  });

  it("execs.journal.tmp as a symlink: compaction writes a fresh file, never the link's target", {
    timeout,
  }, async () => {
    let cl = c as RouterClient;
    await newTask(cl, "t");
    await sleeper(cl, "t"); // a live entry: the journal is compacted when loaded
    cl = await restart(() => plant(join(dir("t"), "execs.journal.tmp"), "symlink", marker.path));
    assert.ok(marker.intact());
    await servesOther(cl, "t");
    assert.ok(lstatSync(join(dir("t"), "execs.journal")).isFile());
  });

  it("KEY.inlen as a FIFO at adoption: the router starts and serves", { timeout }, async () => {
    let cl = c as RouterClient;
    await newTask(cl, "i");
    const id = await cl.start("i", ["cat"], { stdout: "pipe" });
    await cl.writeStdin("i", id, 0, Buffer.from("x\n")); // a ring and its count exist
    cl = await restart(() => plant(join(dir("i"), `${keyOf(dir("i"), id)}.inlen`), "fifo", ""));
    await servesOther(cl, "other");
    await servesOther(cl, "i");
    await new ExecsClient(cl).signal("i", id, "SIGKILL");
    assert.deepEqual(await cl.wait("i", id), { signal: 9 });
  });

  for (const kind of PLANTS) {
    it(`execs.journal as a ${kind}: that task loads stopped, the router starts and serves the others`, {
      timeout,
    }, async () => {
      let cl = c as RouterClient;
      const task = `j-${kind}`;
      await newTask(cl, task);
      await sleeper(cl, task);
      cl = await restart(() => plant(join(dir(task), "execs.journal"), kind, marker.path));
      const t = await new TasksClient(cl).get(task);
      assert.equal(t.state, TaskState.STOPPED);
      assert.match(t.stopReason, /execs\.journal/);
      assert.equal(
        await errorKind(cl.start(task, ["echo", "x"], { stdout: "pipe" })),
        "FailedPrecondition",
      );
      await servesOther(cl, "other");
      assert.ok(marker.intact());
      await new TasksClient(cl).terminate(task); // it can be removed
      tasks.delete(task);
    });
  }
});
