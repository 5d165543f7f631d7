import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { PtyStartOptions } from "../src/client/client.ts";
import { ExecsClient } from "../src/client/execs.ts";
import { ExecState, TerminationCause } from "../src/gen/taskrouter/v1/execs_pb.ts";
import { killSessions } from "./helpers/procs.ts";
import { collect, startRouter, type TestRouter } from "./helpers/router.ts";

const PTY: PtyStartOptions = { rows: 24, cols: 80 };

/** Waits (generously) until the exec's leader runs `comm` (it has exec'd, and owns its terminal). */
async function waitForComm(pid: number, comm: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const now = (await readFile(`/proc/${pid}/comm`, "utf8").catch(() => "")).trim();
    if (now === comm) return;
    if (Date.now() > deadline) throw new Error(`pid ${pid} runs ${now || "nothing"}, not ${comm}`);
    await sleep(20);
  }
}

describe("PTY execs (host runtime)", () => {
  let r: TestRouter;
  let execs: ExecsClient;
  let task: string;
  const pids: number[] = [];
  before(async () => {
    r = await startRouter();
    execs = new ExecsClient(r.client);
    task = await r.newTask();
  });
  after(async () => {
    await killSessions(pids);
    await r.close();
  });

  /** Starts a PTY exec and remembers its pid for cleanup. */
  async function startPty(argv: string[], pty: PtyStartOptions = PTY): Promise<string> {
    const id = await r.client.start(task, argv, { stdout: "pipe", stderr: "pipe", pty });
    const info = await execs.inspect(task, id);
    if (info.pid) pids.push(info.pid);
    return id;
  }

  it("delivers the whole tail: seq 1 20000, 50 runs, every line every time", async () => {
    const expected = `${Array.from({ length: 20000 }, (_, i) => String(i + 1)).join("\r\n")}\r\n`;
    const runs = 50;
    const batch = 5;
    for (let b = 0; b < runs / batch; b++) {
      await Promise.all(
        Array.from({ length: batch }, async (_, i) => {
          const id = await startPty(["seq", "1", "20000"]);
          const [status, out] = await Promise.all([
            r.client.wait(task, id),
            collect(r.client.read(task, id, "stdout")),
          ]);
          assert.deepEqual(status, { code: 0 });
          const text = out.toString();
          const lines = text.split("\r\n").filter((l) => l !== "");
          const run = b * batch + i + 1;
          assert.equal(lines.length, 20000, `run ${run}: ${lines.length} lines`);
          assert.equal(lines.at(-1), "20000", `run ${run}: last line`);
          assert.ok(text === expected, `run ${run}: output differs from seq 1 20000`);
        }),
      );
    }
  });

  it("puts all output on stdout; stderr is empty and ends only at exit", async () => {
    const id = await startPty(["sh", "-c", "read x; echo out-$x; echo err-$x >&2"]);
    let stderrEnded = false;
    const stderr = collect(r.client.read(task, id, "stderr")).then((b) => {
      stderrEnded = true;
      return b;
    });
    // A round trip to the server while the command waits for input: stderr has not ended.
    assert.equal((await execs.inspect(task, id)).state, ExecState.RUNNING);
    assert.equal(stderrEnded, false);
    await r.client.writeStdin(task, id, 0, Buffer.from("x\r"));
    assert.deepEqual(await r.client.wait(task, id), { code: 0 });
    assert.equal((await stderr).length, 0);
    const out = (await collect(r.client.read(task, id, "stdout"))).toString();
    assert.match(out, /out-x\r\n/);
    assert.match(out, /err-x\r\n/);
  });

  it("sizes the terminal from the request (24x80 when 0)", async () => {
    const sized = await startPty(["stty", "size"], { rows: 30, cols: 100 });
    assert.equal((await collect(r.client.read(task, sized, "stdout"))).toString(), "30 100\r\n");
    const dflt = await startPty(["stty", "size"], { rows: 0, cols: 0 });
    assert.equal((await collect(r.client.read(task, dflt, "stdout"))).toString(), "24 80\r\n");
  });

  it("resizes the terminal through ResizeExec (stty size sees it)", async () => {
    const id = await startPty(["sh", "-c", "read x; stty size"]);
    await execs.resize(task, id, 50, 132);
    await r.client.writeStdin(task, id, 0, Buffer.from("go\r"));
    assert.deepEqual(await r.client.wait(task, id), { code: 0 });
    const out = (await collect(r.client.read(task, id, "stdout"))).toString();
    assert.match(out, /^go\r\n50 132\r\n$/);
    const info = await execs.inspect(task, id);
    assert.equal(info.ptyRows, 50);
    assert.equal(info.ptyCols, 132);
  });

  it("sets TERM, COLORTERM and TERM_PROGRAM from the request (TERM defaults to xterm)", async () => {
    const show = ["sh", "-c", 'echo "[$TERM][$COLORTERM][$TERM_PROGRAM]"'];
    const set = await startPty(show, {
      ...PTY,
      term: "screen-256color",
      colorterm: "truecolor",
      termProgram: "tr-test",
    });
    assert.equal(
      (await collect(r.client.read(task, set, "stdout"))).toString(),
      "[screen-256color][truecolor][tr-test]\r\n",
    );
    const unset = await startPty(show);
    assert.equal(
      (await collect(r.client.read(task, unset, "stdout"))).toString(),
      "[xterm][][]\r\n",
    );
  });

  it("passes stdin bytes to the terminal: 0x03 interrupts sleep (SIGINT)", async () => {
    const id = await startPty(["sleep", "100"]);
    const info = await execs.inspect(task, id);
    await waitForComm(info.pid, "sleep");
    await r.client.writeStdin(task, id, 0, Buffer.from([0x03]));
    // The terminal's line discipline turns ^C into SIGINT for the foreground group.
    assert.deepEqual(await r.client.wait(task, id), { signal: 2 });
    assert.equal((await execs.inspect(task, id)).cause, TerminationCause.SIGNALED);
  });

  it("reports a missing program on a terminal as 127 with a line on stdout", async () => {
    const id = await startPty(["no-such-program-xyz"]);
    assert.deepEqual(await r.client.wait(task, id), { code: 127 });
    assert.equal(
      (await collect(r.client.read(task, id, "stdout"))).toString(),
      "taskrouter: no-such-program-xyz: command not found\n",
    );
    assert.equal((await collect(r.client.read(task, id, "stderr"))).length, 0);
  });
});

describe("PTY idle stdin (--pty-idle-timeout)", () => {
  let r: TestRouter;
  let execs: ExecsClient;
  let task: string;
  const pids: number[] = [];
  before(async () => {
    r = await startRouter({ ptyIdleTimeoutMs: 300 });
    execs = new ExecsClient(r.client);
    task = await r.newTask();
  });
  after(async () => {
    await killSessions(pids);
    await r.close();
  });

  async function startSleep(noTerminateOnIdleStdin: boolean): Promise<string> {
    const id = await r.client.start(task, ["sleep", "100"], {
      stdout: "pipe",
      stderr: "pipe",
      pty: { ...PTY, noTerminateOnIdleStdin },
    });
    const info = await execs.inspect(task, id);
    pids.push(info.pid);
    return id;
  }

  it("ends an idle session (SIGHUP, cause timeout); no_terminate_on_idle_stdin keeps one", async () => {
    const kept = await startSleep(true);
    const idle = await startSleep(false);
    assert.deepEqual(await r.client.wait(task, idle), { signal: 1 });
    assert.equal((await execs.inspect(task, idle)).cause, TerminationCause.TIMEOUT);
    // A second idle session started after the first ended also ends: by now `kept`
    // has been idle for two idle periods.
    const idle2 = await startSleep(false);
    assert.deepEqual(await r.client.wait(task, idle2), { signal: 1 });
    const info = await execs.inspect(task, kept);
    assert.equal(info.state, ExecState.RUNNING);
    await execs.signal(task, kept, "KILL");
    assert.deepEqual(await r.client.wait(task, kept), { signal: 9 });
  });

  it("never ends a pipe exec for idle stdin", async () => {
    const id = await r.client.start(task, ["sleep", "100"], { stdout: "pipe", stderr: "pipe" });
    pids.push((await execs.inspect(task, id)).pid);
    const idle = await startSleep(false);
    assert.deepEqual(await r.client.wait(task, idle), { signal: 1 });
    const idle2 = await startSleep(false);
    assert.deepEqual(await r.client.wait(task, idle2), { signal: 1 });
    assert.equal((await execs.inspect(task, id)).state, ExecState.RUNNING);
    await execs.signal(task, id, 9);
    assert.deepEqual(await r.client.wait(task, id), { signal: 9 });
  });
});
