/**
 * Wire compatibility (exit status): drives the router only through an independent gRPC
 * stack (@grpc/grpc-js + @grpc/proto-loader on the project's .proto files), as
 * the protocol's existing grpc-js clients do. Tasks are created with the
 * project's admin client; every TaskCommandRouter call goes through proto-loader.
 * Covers SPEC: Exit status. Shared helpers: test/helpers/wire-common.ts.
 */
import assert from "node:assert/strict";
import { chmod, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { liveInSessions } from "./helpers/router.ts";
import { expectStatus, FD, grpc, STDERR, STDOUT, type WireClient } from "./helpers/wire-client.ts";
import {
  closeWireSuite,
  nextId,
  openWireSuite,
  stillAliveAfterKill,
  text,
  type WireSuite,
} from "./helpers/wire-common.ts";

const { status } = grpc;

describe("wire: exit status (TaskExecPoll, TaskExecWait)", () => {
  let w: WireClient;
  let task: string;
  let dir: string;
  let suite: WireSuite | undefined;
  before(async () => {
    suite = await openWireSuite("taskrouter-wire-");
    ({ w, task, dir } = suite);
  });
  after(() => closeWireSuite(suite));

  const run = async (argv: string[], extra: Record<string, unknown> = {}): Promise<string> => {
    const exec_id = nextId("x");
    await w.start({ task_id: task, exec_id, command_args: argv, ...extra });
    return exec_id;
  };

  it("reports a normal exit as code (exit 3 → code 3; true → code 0, set, not unset)", async () => {
    const e3 = await run(["sh", "-c", "exit 3"]);
    assert.deepEqual(await w.wait(task, e3), { code: 3 });
    assert.deepEqual(await w.poll(task, e3), { code: 3 });
    const e0 = await run(["true"]);
    assert.deepEqual(await w.wait(task, e0), { code: 0 });
    assert.deepEqual(await w.poll(task, e0), { code: 0 });
  });

  it("tells `exit 137` (code 137) from `kill -9 $$` (signal 9) and `kill -TERM $$` (signal 15)", async () => {
    const code137 = await run(["sh", "-c", "exit 137"]);
    const sig9 = await run(["sh", "-c", "kill -9 $$"]);
    const sig15 = await run(["sh", "-c", "kill -TERM $$"]);
    assert.deepEqual(await w.wait(task, code137), { code: 137 });
    assert.deepEqual(await w.wait(task, sig9), { signal: 9 });
    assert.deepEqual(await w.wait(task, sig15), { signal: 15 });
    assert.deepEqual(await w.poll(task, sig9), { signal: 9 });
  });

  it("Poll answers at once: exit_status unset while running, set after exit", async () => {
    const e = await run(["sh", "-c", "read x; exit 7"]);
    assert.equal(await w.poll(task, e), undefined);
    assert.equal(await w.poll(task, e), undefined);
    await w.write({ task_id: task, exec_id: e, offset: 0, data: Buffer.from("go\n"), eof: true });
    assert.deepEqual(await w.wait(task, e), { code: 7 });
    assert.deepEqual(await w.poll(task, e), { code: 7 });
  });

  it("timeout_secs kills the whole process group with SIGKILL and reports signal 9", async () => {
    const e = await run(["sh", "-c", "sleep 100 & echo $$ $!; sleep 100"], {
      stdout_config: STDOUT.PIPE,
      timeout_secs: 3, // the echo must come before the kill, on a loaded machine too
    });
    assert.deepEqual(await w.wait(task, e), { signal: 9 });
    const out = text(
      (await w.readAll({ task_id: task, exec_id: e, file_descriptor: FD.STDOUT })).data,
    );
    const m = /^(\d+) (\d+)\n$/.exec(out);
    assert.ok(m, `expected "LEADER CHILD\\n", got ${JSON.stringify(out)}`);
    const [leader, child] = [Number(m[1]), Number(m[2])];
    assert.equal(await stillAliveAfterKill(child), false, `background sleep ${child} survived`);
    assert.equal(await stillAliveAfterKill(leader), false);
    assert.deepEqual(await liveInSessions([leader]), []);
  });

  it("timeout_secs 0 means no timeout", async () => {
    const e = await run(["sh", "-c", "read x; exit 4"], { timeout_secs: 0 });
    assert.equal(await w.poll(task, e), undefined);
    await w.write({ task_id: task, exec_id: e, offset: 0, eof: true });
    assert.deepEqual(await w.wait(task, e), { code: 4 });
  });

  it("a cancelled Wait leaves the exec running, and a later Wait returns its status", async () => {
    const e = await run(["sh", "-c", "read x; exit 5"]);
    const ac = new AbortController();
    const pending = w.wait(task, e, { signal: ac.signal });
    assert.equal(await w.poll(task, e), undefined); // the Wait reached the server first
    ac.abort();
    await expectStatus(pending, status.CANCELLED);
    await expectStatus(w.wait(task, e, { deadlineMs: 300 }), status.DEADLINE_EXCEEDED);
    // Many abandoned Waits (clients cancel every 60 s, forever).
    const many = Array.from({ length: 20 }, () => {
      const c = new AbortController();
      const p = w.wait(task, e, { signal: c.signal });
      return { c, p };
    });
    assert.equal(await w.poll(task, e), undefined);
    for (const { c } of many) c.abort();
    for (const { p } of many) await expectStatus(p, status.CANCELLED);
    assert.equal(await w.poll(task, e), undefined, "a cancelled Wait ended the command");
    const later = w.wait(task, e);
    await w.write({ task_id: task, exec_id: e, offset: 0, data: Buffer.from("go\n"), eof: true });
    assert.deepEqual(await later, { code: 5 });
    assert.deepEqual(await w.wait(task, e), { code: 5 });
  });

  it("127 for a missing program, 126 for a non-executable file, each with a one-line reason on stderr", async () => {
    const pipes = { stdout_config: STDOUT.PIPE, stderr_config: STDERR.PIPE };
    const noExec = join(dir, "not-executable.sh");
    await writeFile(noExec, "#!/bin/sh\necho should-not-run\n", { mode: 0o644 });
    await chmod(noExec, 0o644);
    const cases: [string, number, RegExp][] = [
      ["/nonexistent-taskrouter-wire/prog", 127, /not found|no such file/i],
      ["taskrouter-wire-no-such-command", 127, /not found/i],
      [noExec, 126, /permission denied/i],
    ];
    for (const [prog, code, why] of cases) {
      const e = await run([prog, "arg"], pipes);
      assert.deepEqual(await w.wait(task, e), { code }, prog);
      const err = text(
        (await w.readAll({ task_id: task, exec_id: e, file_descriptor: FD.STDERR })).data,
      );
      assert.match(err, /^[^\n]+\n$/, `one line on stderr for ${prog}: ${JSON.stringify(err)}`);
      assert.ok(err.includes(prog), `stderr names ${prog}: ${JSON.stringify(err)}`);
      assert.match(err, why);
      const out = await w.readAll({ task_id: task, exec_id: e, file_descriptor: FD.STDOUT });
      assert.equal(out.data.length, 0);
    }
    // Merged: the reason goes to the stdout stream; stderr stays empty.
    const m = await run(["/nonexistent-taskrouter-wire/prog"], {
      stdout_config: STDOUT.PIPE,
      stderr_config: STDERR.STDOUT,
    });
    assert.deepEqual(await w.wait(task, m), { code: 127 });
    const out = text(
      (await w.readAll({ task_id: task, exec_id: m, file_descriptor: FD.STDOUT })).data,
    );
    assert.match(out, /^[^\n]*\/nonexistent-taskrouter-wire\/prog[^\n]*\n$/);
    const err = await w.readAll({ task_id: task, exec_id: m, file_descriptor: FD.STDERR });
    assert.equal(err.data.length, 0);
  });

  it("NOT_FOUND for an unknown task or exec (Poll, Wait)", async () => {
    await expectStatus(w.poll("no-such-task", "x"), status.NOT_FOUND);
    await expectStatus(w.wait("no-such-task", "x"), status.NOT_FOUND);
    await expectStatus(w.poll(task, "no-such-exec"), status.NOT_FOUND);
    await expectStatus(w.wait(task, "no-such-exec"), status.NOT_FOUND);
  });
});
