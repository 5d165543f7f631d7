/**
 * Wire compatibility: drives the router only through an independent gRPC stack
 * (@grpc/grpc-js + @grpc/proto-loader on the project's .proto files), as the
 * protocol's existing grpc-js clients do. Tasks are created with the project's
 * admin client; every TaskCommandRouter call goes through proto-loader.
 * Covers SPEC: Transport, Exit status, TaskExecStart, TaskExecStdioRead,
 * TaskExecStdinWrite.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { chmod, mkdtemp, open, readFile, realpath, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { startH2Proxy } from "./helpers/h2-proxy.ts";
import { liveInSessions, startRouter, type TestRouter } from "./helpers/router.ts";
import {
  type Exit,
  expectStatus,
  FD,
  grpc,
  healthCheck,
  MAX_CHUNK,
  STDERR,
  STDOUT,
  WireClient,
} from "./helpers/wire-client.ts";

const { status } = grpc;
const MiB = 1024 * 1024;
let seq = 0;
const nextId = (prefix: string) => `${prefix}-${++seq}`;

/** True while `pid` exists and is not a zombie. */
async function alive(pid: number): Promise<boolean> {
  const s = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return s !== "" && s.slice(s.lastIndexOf(")") + 2)[0] !== "Z";
}

/** Waits (bounded) for a SIGKILLed process to disappear; returns whether it is still alive. */
async function stillAliveAfterKill(pid: number): Promise<boolean> {
  for (let i = 0; i < 250 && (await alive(pid)); i++) await sleep(20);
  return alive(pid);
}

/** Exec leaders the router knows of (recorded before close, checked after). */
function leaders(r: TestRouter): number[] {
  return r.daemon.tasks
    .list()
    .flatMap((t) => t.listExecs().map((e) => e.pid))
    .filter((p): p is number => p !== undefined);
}

/** Closes clients and router, then asserts no process of any exec session is left. */
async function closeChecked(r: TestRouter | undefined, clients: WireClient[]): Promise<void> {
  if (!r) return;
  const pids = leaders(r);
  for (const c of clients) c.close();
  await r.close();
  assert.deepEqual(await liveInSessions(pids), [], "processes left behind after router close");
}

/** A promise that records whether it has settled. */
function tracked<T>(p: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  const promise = p.finally(() => {
    done = true;
  });
  promise.catch(() => {});
  return { promise, settled: () => done };
}

const text = (b: Buffer) => b.toString("utf8");

describe("wire: exit status (TaskExecPoll, TaskExecWait)", () => {
  let r: TestRouter;
  let w: WireClient;
  let task: string;
  let dir: string;
  before(async () => {
    r = await startRouter();
    w = new WireClient(r.address);
    task = await r.newTask();
    dir = await mkdtemp(join(tmpdir(), "taskrouter-wire-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
    await closeChecked(r, [w]);
  });

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
      timeout_secs: 1,
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

describe("wire: TaskExecStart", () => {
  let r: TestRouter;
  let w: WireClient;
  let task: string;
  let dir: string;
  before(async () => {
    r = await startRouter();
    w = new WireClient(r.address);
    task = await r.newTask();
    dir = await realpath(await mkdtemp(join(tmpdir(), "taskrouter-wire-")));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
    await closeChecked(r, [w]);
  });

  const out = async (exec_id: string, fd: number = FD.STDOUT) =>
    text((await w.readAll({ task_id: task, exec_id, file_descriptor: fd })).data);

  it("an identical start twice (also concurrently, also after exit) runs the command once", async () => {
    const seqFile = join(dir, "seq.log");
    const req = {
      task_id: task,
      exec_id: nextId("idem"),
      command_args: ["sh", "-c", `echo run >> ${seqFile}`],
    };
    await w.start(req);
    await w.start(req);
    assert.deepEqual(await w.wait(task, req.exec_id), { code: 0 });
    await w.start(req);
    assert.equal(await readFile(seqFile, "utf8"), "run\n");

    const parFile = join(dir, "par.log");
    const par = {
      task_id: task,
      exec_id: nextId("idem"),
      command_args: ["sh", "-c", `echo run >> ${parFile}`],
    };
    await Promise.all([w.start(par), w.start(par), w.start(par), w.start(par)]);
    assert.deepEqual(await w.wait(task, par.exec_id), { code: 0 });
    assert.equal(await readFile(parFile, "utf8"), "run\n");
  });

  it("the same exec_id with a different request gets ALREADY_EXISTS and leaves the first alone", async () => {
    const exec_id = nextId("dup");
    const base = {
      task_id: task,
      exec_id,
      command_args: ["sh", "-c", "read x; echo first"],
      stdout_config: STDOUT.PIPE,
    };
    await w.start(base);
    await expectStatus(
      w.start({ ...base, command_args: ["echo", "second"] }),
      status.ALREADY_EXISTS,
    );
    await expectStatus(w.start({ ...base, stdout_config: STDOUT.DEVNULL }), status.ALREADY_EXISTS);
    await expectStatus(w.start({ ...base, timeout_secs: 30 }), status.ALREADY_EXISTS);
    await expectStatus(w.start({ ...base, workdir: dir }), status.ALREADY_EXISTS);
    await w.start(base); // the identical one is still fine
    await w.write({ task_id: task, exec_id, offset: 0, eof: true });
    assert.deepEqual(await w.wait(task, exec_id), { code: 0 });
    assert.equal(await out(exec_id), "first\n");
  });

  it("INVALID_ARGUMENT for malformed requests, and nothing is started or reserved", async () => {
    const argMax = Number(execFileSync("getconf", ["ARG_MAX"], { encoding: "utf8" }));
    const piece = "x".repeat(100 * 1024);
    const total = Math.max(3 * MiB, argMax + MiB);
    const huge = Array.from({ length: Math.ceil(total / piece.length) }, () => piece);
    const cases: [string, Record<string, unknown>][] = [
      ["empty argv", { command_args: [] }],
      ["empty task_id", { task_id: "" }],
      ["empty exec_id", { exec_id: "" }],
      ["unknown stdout_config", { stdout_config: 7 }],
      ["unknown stderr_config", { stderr_config: 99 }],
      ["argv over ARG_MAX", { command_args: ["echo", ...huge] }],
      ["NUL in an argument", { command_args: ["echo", "a\0b"] }],
      ["empty program name", { command_args: [""] }],
      ["relative workdir", { workdir: "relative/dir" }],
    ];
    for (const [name, patch] of cases) {
      const exec_id = nextId("bad");
      const req = {
        task_id: task,
        exec_id,
        command_args: ["echo", "ok"],
        stdout_config: STDOUT.PIPE,
        ...patch,
      };
      const e = await expectStatus(w.start(req as never), status.INVALID_ARGUMENT).catch(
        (err: Error) => {
          throw new Error(`${name}: ${err.message}`);
        },
      );
      assert.ok(e.details.length > 0 && e.details.length < 1000, `${name}: a short, clear message`);
      if (exec_id !== "" && req.task_id !== "" && req.exec_id !== "") {
        await expectStatus(w.poll(task, exec_id), status.NOT_FOUND);
        // The id was not taken: a valid request with it starts normally.
        await w.start({
          task_id: task,
          exec_id,
          command_args: ["echo", "ok"],
          stdout_config: STDOUT.PIPE,
        });
        assert.deepEqual(await w.wait(task, exec_id), { code: 0 });
        assert.equal(await out(exec_id), "ok\n");
      }
    }
  });

  it("an argv within ARG_MAX works and is passed as is", async () => {
    const piece = "y".repeat(100 * 1024);
    const exec_id = nextId("args");
    const args = Array.from({ length: 10 }, () => piece);
    await w.start({
      task_id: task,
      exec_id,
      command_args: ["sh", "-c", 'echo $#; printf %s "$1" | wc -c', "sh", ...args],
      stdout_config: STDOUT.PIPE,
    });
    assert.deepEqual(await w.wait(task, exec_id), { code: 0 });
    assert.deepEqual((await out(exec_id)).split(/\s+/).filter(Boolean), [
      "10",
      String(piece.length),
    ]);
  });

  it("command_args is an argv, never a shell string", async () => {
    const exec_id = nextId("argv");
    await w.start({
      task_id: task,
      exec_id,
      command_args: ["echo", "$HOME;", "*", "`id`", "a  b"],
      stdout_config: STDOUT.PIPE,
    });
    assert.deepEqual(await w.wait(task, exec_id), { code: 0 });
    assert.equal(await out(exec_id), "$HOME; * `id` a  b\n");
  });

  it("stdout_config and stderr_config unset discard both streams; PIPE keeps each", async () => {
    const argv = ["sh", "-c", "echo out; echo err >&2"];
    const dn = nextId("devnull");
    await w.start({ task_id: task, exec_id: dn, command_args: argv });
    assert.deepEqual(await w.wait(task, dn), { code: 0 });
    for (const fd of [FD.STDOUT, FD.STDERR]) {
      const res = await w.readAll({ task_id: task, exec_id: dn, file_descriptor: fd });
      assert.deepEqual(res.sizes, []);
    }
    const p = nextId("pipe");
    await w.start({
      task_id: task,
      exec_id: p,
      command_args: argv,
      stdout_config: STDOUT.PIPE,
      stderr_config: STDERR.PIPE,
    });
    assert.deepEqual(await w.wait(task, p), { code: 0 });
    assert.equal(await out(p, FD.STDOUT), "out\n");
    assert.equal(await out(p, FD.STDERR), "err\n");
  });

  it("workdir: runs there when set, in the task's default directory when unset", async () => {
    const set = nextId("wd");
    await w.start({
      task_id: task,
      exec_id: set,
      command_args: ["pwd"],
      stdout_config: STDOUT.PIPE,
      workdir: dir,
    });
    assert.deepEqual(await w.wait(task, set), { code: 0 });
    assert.equal(await out(set), `${dir}\n`);
    const unset = nextId("wd");
    await w.start({
      task_id: task,
      exec_id: unset,
      command_args: ["pwd"],
      stdout_config: STDOUT.PIPE,
    });
    assert.deepEqual(await w.wait(task, unset), { code: 0 });
    const def = (await out(unset)).trimEnd();
    assert.ok(def.startsWith("/"), def);
    assert.ok((await stat(def)).isDirectory());
    assert.ok(
      def.startsWith(await realpath(r.dataDir)),
      `default dir ${def} lies under the data dir`,
    );
  });

  it("FAILED_PRECONDITION naming the path for a missing workdir and for one that is a file", async () => {
    const missing = join(dir, "no", "such", "dir");
    const file = join(dir, "plain-file");
    await writeFile(file, "x");
    for (const workdir of [missing, file]) {
      const exec_id = nextId("wdbad");
      const req = {
        task_id: task,
        exec_id,
        command_args: ["pwd"],
        stdout_config: STDOUT.PIPE,
        workdir,
      };
      const e = await expectStatus(w.start(req), status.FAILED_PRECONDITION);
      assert.ok(e.details.includes(workdir), `${JSON.stringify(e.details)} names ${workdir}`);
      await expectStatus(w.poll(task, exec_id), status.NOT_FOUND);
    }
  });

  it("NOT_FOUND for an unknown task", async () => {
    await expectStatus(
      w.start({ task_id: "no-such-task", exec_id: nextId("nf"), command_args: ["true"] }),
      status.NOT_FOUND,
    );
  });

  // The gate of the next issue's features (pty_info, secret_ids, runtime_debug), in one place:
  // the UNIMPLEMENTED answers of the first build became SPEC's answers when that issue landed.
  it("next-issue gate: pty_info.enabled starts, unknown secret_id NOT_FOUND, runtime_debug PERMISSION_DENIED", async () => {
    const base = { task_id: task, command_args: ["true"] };
    const pty = nextId("pty");
    await w.start({
      ...base,
      exec_id: pty,
      command_args: ["sh", "-c", "printf pty-ok"],
      stdout_config: STDOUT.PIPE,
      pty_info: { enabled: true, winsz_rows: 24, winsz_cols: 80 },
    });
    assert.deepEqual(await w.wait(task, pty), { code: 0 });
    assert.equal(await out(pty), "pty-ok");
    const sec = nextId("sec");
    await expectStatus(
      w.start({ ...base, exec_id: sec, secret_ids: ["no-such-secret"] }),
      status.NOT_FOUND,
      /no-such-secret/,
    );
    await expectStatus(w.poll(task, sec), status.NOT_FOUND); // nothing started
    await expectStatus(
      w.start({ ...base, exec_id: nextId("dbg"), runtime_debug: true }),
      status.PERMISSION_DENIED,
    );
    // pty_info present but not enabled is an ordinary exec.
    const plain = nextId("ptyoff");
    await w.start({ ...base, exec_id: plain, pty_info: { enabled: false } });
    assert.deepEqual(await w.wait(task, plain), { code: 0 });
  });
});

describe("wire: task teardown", () => {
  let r: TestRouter;
  let w: WireClient;
  before(async () => {
    r = await startRouter();
    w = new WireClient(r.address);
  });
  after(() => closeChecked(r, [w]));

  it("terminating a task kills its execs' groups; then Start is FAILED_PRECONDITION and the rest NOT_FOUND", async () => {
    const task = await r.newTask();
    const exec_id = nextId("td");
    await w.start({
      task_id: task,
      exec_id,
      command_args: ["sh", "-c", "sleep 100 & echo $$ $!; wait"],
      stdout_config: STDOUT.PIPE,
    });
    let line = "";
    const stream = w.read({ task_id: task, exec_id, file_descriptor: FD.STDOUT });
    for await (const msg of stream) {
      line += text(msg.data);
      if (line.includes("\n")) break;
    }
    const m = /^(\d+) (\d+)\n$/.exec(line);
    assert.ok(m, line);
    const pending = w.wait(task, exec_id);
    assert.equal(await w.poll(task, exec_id), undefined);
    await r.tasks.terminate(task);
    assert.deepEqual(await pending, { signal: 9 });
    for (const pid of [Number(m[1]), Number(m[2])])
      assert.equal(await stillAliveAfterKill(pid), false);

    const e = await expectStatus(
      w.start({ task_id: task, exec_id: nextId("td"), command_args: ["true"] }),
      status.FAILED_PRECONDITION,
    );
    assert.ok(e.details.includes(task), e.details);
    await expectStatus(w.poll(task, exec_id), status.NOT_FOUND);
    await expectStatus(w.wait(task, exec_id), status.NOT_FOUND);
    await expectStatus(w.readAll({ task_id: task, exec_id }), status.NOT_FOUND);
    await expectStatus(
      w.write({ task_id: task, exec_id, offset: 0, data: Buffer.from("x") }),
      status.NOT_FOUND,
    );
  });
});

describe("wire: TaskExecStdioRead", () => {
  const SIZE = 100 * MiB;
  const HALF = 50 * MiB;
  const MIDDLE = 73 * MiB + 12_345;
  let r: TestRouter;
  let w: WireClient;
  let task: string;
  let dir: string;
  let file: string;
  let fullSha: string;
  let middleSha: string;
  let big: string; // a finished exec whose stdout is the 100 MiB file

  before(async () => {
    r = await startRouter();
    w = new WireClient(r.address);
    task = await r.newTask();
    dir = await mkdtemp(join(tmpdir(), "taskrouter-wire-"));
    file = join(dir, "100MiB.bin");
    const fh = await open(file, "w");
    const h = createHash("sha256");
    for (let i = 0; i < SIZE / MiB; i++) {
      const b = randomBytes(MiB);
      h.update(b);
      await fh.write(b);
    }
    await fh.close();
    fullSha = h.digest("hex");
    const hm = createHash("sha256");
    for await (const c of createReadStream(file, { start: MIDDLE })) hm.update(c as Buffer);
    middleSha = hm.digest("hex");
    big = nextId("rd");
    await w.start({
      task_id: task,
      exec_id: big,
      command_args: ["cat", file],
      stdout_config: STDOUT.PIPE,
    });
    assert.deepEqual(await w.wait(task, big), { code: 0 });
  });
  after(async () => {
    try {
      await closeChecked(r, [w]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  const start = async (argv: string[], extra: Record<string, unknown> = {}) => {
    const exec_id = nextId("rd");
    await w.start({
      task_id: task,
      exec_id,
      command_args: argv,
      stdout_config: STDOUT.PIPE,
      ...extra,
    });
    return exec_id;
  };
  const checkSizes = (s: { min: number; max: number; count: number }) => {
    assert.ok(s.count > 0 && s.min >= 1, `no empty chunk (min ${s.min})`);
    assert.ok(s.max <= MAX_CHUNK, `chunks ≤ 1 MiB (max ${s.max})`);
  };

  it("streams 100 MiB byte-exact to two concurrent readers while the command runs (chunks 1 B..1 MiB)", async () => {
    // First half, wait for stdin, second half: both readers are live across the pause.
    const live = await start([
      "sh",
      "-c",
      `head -c ${HALF} "$0"; read x; tail -c +${HALF + 1} "$0"`,
      file,
    ]);
    let reached = 0;
    let release!: () => void;
    const bothAtHalf = new Promise<void>((res) => {
      release = res;
    });
    const onProgress = () => {
      let hit = false;
      return (n: number) => {
        if (!hit && n >= HALF) {
          hit = true;
          if (++reached === 2) release();
        }
      };
    };
    const readers = [0, 1].map(() =>
      w.readHash({ task_id: task, exec_id: live, offset: 0 }, onProgress()),
    );
    await bothAtHalf;
    assert.equal(await w.poll(task, live), undefined, "still running at the pause");
    await w.write({ task_id: task, exec_id: live, offset: 0, data: Buffer.from("\n"), eof: true });
    for (const res of await Promise.all(readers)) {
      assert.equal(res.length, SIZE);
      assert.equal(res.sha256, fullSha);
      checkSizes(res.sizes);
    }
    assert.deepEqual(await w.wait(task, live), { code: 0 });
  });

  it("reads the finished stream again from 0 and from the middle", async () => {
    const all = await w.readHash({
      task_id: task,
      exec_id: big,
      offset: 0,
      file_descriptor: FD.STDOUT,
    });
    assert.equal(all.length, SIZE);
    assert.equal(all.sha256, fullSha);
    checkSizes(all.sizes);
    const mid = await w.readHash({ task_id: task, exec_id: big, offset: MIDDLE });
    assert.equal(mid.length, SIZE - MIDDLE);
    assert.equal(mid.sha256, middleSha);
    checkSizes(mid.sizes);
  });

  it("after the connection drops mid-stream, reading from the bytes received gives the rest (no gap, no repeat)", async (t) => {
    const proxy = await startH2Proxy(r.address);
    const pw = new WireClient(proxy.address);
    try {
      const h = createHash("sha256");
      let received = 0;
      let cuts = 0;
      let errors = 0;
      while (cuts < 3) {
        try {
          for await (const msg of pw.read({ task_id: task, exec_id: big, offset: received })) {
            h.update(msg.data);
            received += msg.data.length;
            if (received >= (cuts + 1) * 20 * MiB && cuts < 3) {
              cuts++;
              proxy.cut();
            }
          }
          if (received === SIZE) break;
        } catch (err) {
          errors++;
          const code = (err as grpc.ServiceError).code;
          assert.ok(
            [status.UNAVAILABLE, status.CANCELLED, status.INTERNAL, status.UNKNOWN].includes(code),
            `a dropped connection gives a retryable code, got ${status[code]}`,
          );
        }
      }
      if (received < SIZE) {
        for await (const msg of pw.read({ task_id: task, exec_id: big, offset: received })) {
          h.update(msg.data);
          received += msg.data.length;
        }
      }
      t.diagnostic(`${cuts} cuts, ${errors} broken calls`);
      assert.ok(errors >= 1, "the cut broke at least one call");
      assert.equal(received, SIZE);
      assert.equal(h.digest("hex"), fullSha);
    } finally {
      pw.close();
      await proxy.close();
    }
  });

  it("at the exact end of a finished stream: OK and no data; past it: OUT_OF_RANGE", async () => {
    const e = await start(["printf", "hello"]);
    assert.deepEqual(await w.wait(task, e), { code: 0 });
    assert.equal(text((await w.readAll({ task_id: task, exec_id: e, offset: 3 })).data), "lo");
    assert.deepEqual((await w.readAll({ task_id: task, exec_id: e, offset: 5 })).sizes, []);
    await expectStatus(w.readAll({ task_id: task, exec_id: e, offset: 6 }), status.OUT_OF_RANGE);
    await expectStatus(
      w.readAll({ task_id: task, exec_id: big, offset: SIZE + 1 }),
      status.OUT_OF_RANGE,
    );
    await expectStatus(
      w.readAll({ task_id: task, exec_id: e, offset: 1, file_descriptor: FD.STDERR }),
      status.OUT_OF_RANGE,
    );
  });

  it("a huge offset (2^64-1) past the end of a finished stream is OUT_OF_RANGE too", async () => {
    const e = await start(["printf", "x"]);
    assert.deepEqual(await w.wait(task, e), { code: 0 });
    await expectStatus(
      w.readAll({ task_id: task, exec_id: e, offset: "18446744073709551615" as unknown as number }),
      status.OUT_OF_RANGE,
    );
  });

  it("an offset past the current end of a running stream waits until the data exists", async () => {
    const e = await start(["sh", "-c", "printf abc; read x; printf defgh"]);
    let first = "";
    for await (const msg of w.read({ task_id: task, exec_id: e })) {
      first += text(msg.data);
      if (first.length >= 3) break;
    }
    assert.equal(first, "abc");
    const ahead = tracked(w.readAll({ task_id: task, exec_id: e, offset: 5 }));
    assert.equal(await w.poll(task, e), undefined);
    await sleep(200); // room for a wrong early answer (OUT_OF_RANGE, or an empty end)
    assert.equal(ahead.settled(), false, "a read past the current end ended early");
    await w.write({ task_id: task, exec_id: e, offset: 0, data: Buffer.from("\n"), eof: true });
    assert.equal(text((await ahead.promise).data), "fgh"); // bytes 5.. of "abcdefgh"
    assert.deepEqual(await w.wait(task, e), { code: 0 });
  });

  it("a DEVNULL stream read waits for the command, then ends with OK and no data", async () => {
    const e = await start(["sh", "-c", "read x; echo gone; echo err >&2"], {
      stdout_config: STDOUT.DEVNULL,
    });
    const rd = tracked(w.readAll({ task_id: task, exec_id: e, file_descriptor: FD.STDOUT }));
    const rdErr = tracked(w.readAll({ task_id: task, exec_id: e, file_descriptor: FD.STDERR }));
    assert.equal(await w.poll(task, e), undefined);
    await sleep(200);
    assert.equal(rd.settled() || rdErr.settled(), false, "a DEVNULL read ended before the command");
    await w.write({ task_id: task, exec_id: e, offset: 0, eof: true });
    assert.deepEqual((await rd.promise).sizes, []);
    assert.deepEqual((await rdErr.promise).sizes, []);
    assert.deepEqual(await w.poll(task, e), { code: 0 });
  });

  it("merged stderr: stdout carries both in write order, stderr is empty and ends at exit", async () => {
    const e = await start(["sh", "-c", "read x; echo a; echo b >&2; echo c"], {
      stderr_config: STDERR.STDOUT,
    });
    const errRead = tracked(w.readAll({ task_id: task, exec_id: e, file_descriptor: FD.STDERR }));
    assert.equal(await w.poll(task, e), undefined);
    await sleep(200);
    assert.equal(errRead.settled(), false, "the merged stderr read ended before the command");
    await w.write({ task_id: task, exec_id: e, offset: 0, eof: true });
    assert.equal(text((await w.readAll({ task_id: task, exec_id: e })).data), "a\nb\nc\n");
    assert.deepEqual((await errRead.promise).sizes, []);

    const many = await start(
      ["sh", "-c", "i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo o$i; echo e$i >&2; done"],
      {
        stderr_config: STDERR.STDOUT,
      },
    );
    assert.deepEqual(await w.wait(task, many), { code: 0 });
    const want = Array.from({ length: 300 }, (_, i) => `o${i + 1}\ne${i + 1}\n`).join("");
    assert.equal(text((await w.readAll({ task_id: task, exec_id: many })).data), want);
  });

  it("a descendant holding the pipe is cut off after the grace; the stream ends", async () => {
    const e = await start(["sh", "-c", "sleep 60 & echo $!"]);
    assert.deepEqual(await w.wait(task, e), { code: 0 });
    const res = await w.readAll({ task_id: task, exec_id: e });
    const pid = Number(text(res.data).trim());
    assert.ok(pid > 0, text(res.data));
    try {
      assert.equal(await alive(pid), true, "the orphan still runs (it was only cut off)");
    } finally {
      process.kill(pid, "SIGKILL");
    }
  });

  it("a cancelled read leaves the command running", async () => {
    const e = await start(["sh", "-c", "echo x; read y; exit 2"]);
    const stream = w.read({ task_id: task, exec_id: e });
    const got = await new Promise<string>((res, rej) => {
      stream.once("data", (m: { data: Buffer }) => res(text(m.data)));
      stream.once("error", rej);
    });
    assert.equal(got, "x\n");
    const ended = new Promise<grpc.ServiceError>((res) => stream.once("error", res));
    stream.cancel();
    assert.equal((await ended).code, status.CANCELLED);
    assert.equal(await w.poll(task, e), undefined);
    await w.write({ task_id: task, exec_id: e, offset: 0, eof: true });
    assert.deepEqual(await w.wait(task, e), { code: 2 });
  });

  it("NOT_FOUND for an unknown task or exec; INVALID_ARGUMENT for an unknown file_descriptor", async () => {
    await expectStatus(w.readAll({ task_id: "no-such-task", exec_id: "x" }), status.NOT_FOUND);
    await expectStatus(w.readAll({ task_id: task, exec_id: "no-such-exec" }), status.NOT_FOUND);
    await expectStatus(
      w.readAll({ task_id: task, exec_id: big, file_descriptor: 5 }),
      status.INVALID_ARGUMENT,
    );
  });
});

describe("wire: TaskExecStdinWrite", () => {
  let r: TestRouter;
  let w: WireClient;
  let task: string;
  before(async () => {
    r = await startRouter();
    w = new WireClient(r.address);
    task = await r.newTask();
  });
  after(() => closeChecked(r, [w]));

  const start = async (argv: string[]) => {
    const exec_id = nextId("in");
    await w.start({ task_id: task, exec_id, command_args: argv, stdout_config: STDOUT.PIPE });
    return exec_id;
  };
  const write = (exec_id: string, offset: number, data: string, eof = false) =>
    w.write({ task_id: task, exec_id, offset, data: Buffer.from(data), eof });
  const finish = async (exec_id: string): Promise<[Exit, string]> => [
    await w.wait(task, exec_id),
    text((await w.readAll({ task_id: task, exec_id })).data),
  ];

  it("drops the bytes already written: abc@0 then abcdef@0 then defghi@3 → abcdefghi", async () => {
    const e = await start(["cat"]);
    await write(e, 0, "abc");
    await write(e, 0, "abcdef");
    await write(e, 3, "defghi");
    await write(e, 0, "abc"); // a late retry of the first write
    await write(e, 9, "", true);
    assert.deepEqual(await finish(e), [{ code: 0 }, "abcdefghi"]);
  });

  it("an offset past the bytes written gets OUT_OF_RANGE and changes nothing", async () => {
    const e = await start(["cat"]);
    await write(e, 0, "ab");
    await expectStatus(write(e, 5, "zz"), status.OUT_OF_RANGE);
    await expectStatus(write(e, 3, "", true), status.OUT_OF_RANGE);
    await expectStatus(
      w.write({
        task_id: task,
        exec_id: e,
        offset: "18446744073709551615" as unknown as number,
        data: Buffer.from("q"),
      }),
      status.OUT_OF_RANGE,
    );
    await write(e, 2, "cd", true);
    assert.deepEqual(await finish(e), [{ code: 0 }, "abcd"]);
  });

  it("EOF rules: EOF twice OK, EOF-only with offset 0 OK, a retry of old data OK, new data FAILED_PRECONDITION", async () => {
    const e = await start(["cat"]);
    await write(e, 0, "hello", true);
    await write(e, 5, "", true);
    await write(e, 0, "", true);
    await write(e, 0, "", false);
    await write(e, 0, "hello", true);
    await expectStatus(write(e, 5, "!"), status.FAILED_PRECONDITION);
    await expectStatus(write(e, 0, "hello!", true), status.FAILED_PRECONDITION);
    assert.deepEqual(await finish(e), [{ code: 0 }, "hello"]);
  });

  it("a write to a command that has exited is dropped with OK", async () => {
    const e = await start(["true"]);
    assert.deepEqual(await w.wait(task, e), { code: 0 });
    await write(e, 0, "data");
    await write(e, 0, "data", true);
    await write(e, 0, "", true);
    const never = await start(["sh", "-c", "exec 0<&-; exit 3"]); // closed its stdin itself
    assert.deepEqual(await w.wait(task, never), { code: 3 });
    await write(never, 0, "x".repeat(1 << 20), true);
  });

  it("a 16 MiB write in one message reaches the command whole", async () => {
    const e = await start(["wc", "-c"]);
    const data = randomBytes(16 * MiB);
    await w.write({ task_id: task, exec_id: e, offset: 0, data, eof: true });
    const [exit, out] = await finish(e);
    assert.deepEqual(exit, { code: 0 });
    assert.equal(out.trim(), String(16 * MiB));
  });

  it("many writes by offset arrive in order, byte-exact", async () => {
    const e = await start(["sha256sum"]);
    const data = randomBytes(4 * MiB + 333);
    for (let off = 0; off < data.length; off += 64 * 1024 + 7) {
      await w.write({
        task_id: task,
        exec_id: e,
        offset: off,
        data: data.subarray(off, off + 64 * 1024 + 7),
      });
    }
    await w.write({ task_id: task, exec_id: e, offset: data.length, eof: true });
    const [exit, out] = await finish(e);
    assert.deepEqual(exit, { code: 0 });
    assert.equal(out.split(" ")[0], createHash("sha256").update(data).digest("hex"));
  });

  it("NOT_FOUND for an unknown task or exec", async () => {
    await expectStatus(
      w.write({ task_id: "no-such-task", exec_id: "x", offset: 0, eof: true }),
      status.NOT_FOUND,
    );
    await expectStatus(
      w.write({ task_id: task, exec_id: "no-such-exec", offset: 0, eof: true }),
      status.NOT_FOUND,
    );
  });
});

describe("wire: transport", () => {
  let r: TestRouter;
  let w: WireClient;
  let task: string;
  before(async () => {
    r = await startRouter();
    w = new WireClient(r.address);
    task = await r.newTask();
  });
  after(() => closeChecked(r, [w]));

  it("accepts a 100 MiB request message (one stdin write of 100 MiB into wc -c)", async () => {
    const exec_id = nextId("big-in");
    await w.start({
      task_id: task,
      exec_id,
      command_args: ["wc", "-c"],
      stdout_config: STDOUT.PIPE,
    });
    await w.write({
      task_id: task,
      exec_id,
      offset: 0,
      data: Buffer.alloc(100 * MiB, 0x61),
      eof: true,
    });
    assert.deepEqual(await w.wait(task, exec_id), { code: 0 });
    assert.equal(
      text((await w.readAll({ task_id: task, exec_id })).data).trim(),
      String(100 * MiB),
    );
  });

  it("tolerates keepalive pings with no call open: no GOAWAY, the channel stays READY", async (t) => {
    const proxy = await startH2Proxy(r.address);
    const kw = new WireClient(proxy.address, {
      "grpc.keepalive_time_ms": 200,
      "grpc.keepalive_timeout_ms": 1000,
      "grpc.keepalive_permit_without_calls": 1,
    });
    try {
      await expectStatus(kw.poll(task, "no-such-exec"), status.NOT_FOUND); // connects
      const channel = kw.raw.getChannel();
      const states: string[] = [];
      let watching = true;
      const watch = (from: grpc.connectivityState) => {
        channel.watchConnectivityState(from, Date.now() + 60_000, () => {
          if (!watching) return;
          const now = channel.getConnectivityState(false);
          states.push(grpc.connectivityState[now]);
          watch(now);
        });
      };
      assert.equal(channel.getConnectivityState(false), grpc.connectivityState.READY);
      watch(grpc.connectivityState.READY);
      await sleep(3000); // idle, no call open
      const exec_id = nextId("ka");
      await kw.start({
        task_id: task,
        exec_id,
        command_args: ["echo", "still here"],
        stdout_config: STDOUT.PIPE,
      });
      assert.deepEqual(await kw.wait(task, exec_id), { code: 0 });
      assert.equal(text((await kw.readAll({ task_id: task, exec_id })).data), "still here\n");
      watching = false;
      assert.deepEqual(states, [], "the channel left READY while idle");
      assert.ok(proxy.clientPings >= 2, `the client pinged (${proxy.clientPings} pings)`);
      assert.ok(proxy.serverPingAcks >= proxy.clientPings - 1, "the router answered the pings");
      t.diagnostic(`${proxy.clientPings} pings, ${proxy.serverPingAcks} acks, states ${states}`);
      assert.equal(proxy.serverGoaways, 0, "the router sent GOAWAY");
    } finally {
      kw.close();
      await proxy.close();
    }
  });

  it("serves grpc.health.v1.Health/Check: SERVING for the empty service name", async () => {
    assert.equal(await healthCheck(r.address, ""), "SERVING");
    await expectStatus(healthCheck(r.address, "no.such.Service"), status.NOT_FOUND);
  });

  it("an unknown method of the service gets UNIMPLEMENTED", async () => {
    const err = await new Promise<grpc.ServiceError | null>((resolve) => {
      w.raw.makeUnaryRequest(
        "/modal.task_command_router.TaskCommandRouter/NoSuchRpc",
        (x: Buffer) => x,
        (x: Buffer) => x,
        Buffer.alloc(0),
        (e) => resolve(e),
      );
    });
    assert.equal(err?.code, status.UNIMPLEMENTED);
  });
});

describe("wire: router shutdown", () => {
  let r: TestRouter | undefined;
  let w: WireClient;
  before(async () => {
    r = await startRouter();
    w = new WireClient(r.address);
  });
  after(() => closeChecked(r, [w]));

  it("ends open Wait and Read calls with UNAVAILABLE and leaves no process behind", async () => {
    const router = r as TestRouter;
    const task = await router.newTask();
    const exec_id = nextId("sd");
    await w.start({
      task_id: task,
      exec_id,
      command_args: ["sh", "-c", "sleep 100 & echo $$ $!; wait"],
      stdout_config: STDOUT.PIPE,
    });
    let line = "";
    const stream = w.read({ task_id: task, exec_id });
    const firstLine = new Promise<void>((res) => {
      stream.on("data", (m: { data: Buffer }) => {
        line += text(m.data);
        if (line.includes("\n")) res();
      });
    });
    const streamStatus = new Promise<grpc.status>((res) => {
      stream.on("status", (s: grpc.StatusObject) => res(s.code));
      stream.on("error", () => {}); // the code is checked through "status"
    });
    const waiting = tracked(w.wait(task, exec_id));
    await firstLine;
    const m = /^(\d+) (\d+)\n$/.exec(line);
    assert.ok(m, line);
    assert.equal(await w.poll(task, exec_id), undefined);
    const pids = leaders(router);
    await router.close();
    r = undefined;
    await expectStatus(waiting.promise, status.UNAVAILABLE);
    assert.equal(await streamStatus, status.UNAVAILABLE);
    for (const pid of [Number(m[1]), Number(m[2])])
      assert.equal(await stillAliveAfterKill(pid), false);
    assert.deepEqual(await liveInSessions(pids), []);
  });
});
