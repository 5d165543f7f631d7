/**
 * Task entrypoints (issue 12 part 1, PROTOCOL-LATER §3.3/§5.5) through the
 * independent grpc-js + proto-loader stack, on every runtime: a task created
 * with an entrypoint serves its stdout/stderr by offset with
 * `starting_offset` (live and after exit, resumed in the middle, above the
 * requested offset once retention dropped bytes, UNAVAILABLE for a reader
 * that fell behind retention mid-stream, never an empty chunk), its
 * stdin by offset (replayed prefix, gap, EOF), and ends when it exits (exit
 * code in GetTask, execs killed, new execs refused). An entrypoint that
 * cannot start fails CreateTask and leaves nothing behind.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { TaskState } from "../src/gen/taskrouter/v1/tasks_pb.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";
import { OCI_RUNTIMES, RUNSC, runcSkipReason, startRuncRouter } from "./helpers/runc.ts";
import { expectStatus, FD, grpc, type SandboxChunk, WireClient } from "./helpers/wire-client.ts";

const RETAIN = 16 * 1024;

const variants: { label: string; oci: string | undefined }[] = [
  { label: "host runtime", oci: undefined },
  ...OCI_RUNTIMES.map((o) => ({ label: `runc runtime, ${o.label}`, oci: o.binary })),
];

interface Chunk {
  data: Buffer;
  starting_offset: number;
}

/** The raw SandboxStdioReadV2 stream, cancelled when `signal` aborts. */
function sandboxRead(
  w: WireClient,
  task_id: string,
  offset: number,
  fd: number = FD.STDOUT,
  signal?: AbortSignal,
): AsyncIterable<SandboxChunk> {
  const call = w.sandboxRead({ task_id, offset, file_descriptor: fd });
  signal?.addEventListener("abort", () => call.cancel(), { once: true });
  return call;
}

/** Reads a SandboxStdioReadV2 stream to its end: every chunk, never an empty one. */
async function readAll(w: WireClient, task: string, offset: number, fd: number = FD.STDOUT) {
  const chunks: Chunk[] = [];
  for await (const m of sandboxRead(w, task, offset, fd)) {
    assert.ok(m.data.length > 0, "an empty data chunk");
    chunks.push({ data: m.data, starting_offset: Number(m.starting_offset) });
  }
  // Each message's starting_offset is where the one before it ended.
  for (let i = 1; i < chunks.length; i++) {
    const prev = chunks[i - 1] as Chunk;
    assert.equal(chunks[i]?.starting_offset, prev.starting_offset + prev.data.length);
  }
  return {
    start: chunks[0]?.starting_offset,
    data: Buffer.concat(chunks.map((c) => c.data)),
  };
}

/** Reads stdout from `offset` until it holds `text`; returns what came, and the first starting_offset. */
async function readUntil(w: WireClient, task: string, offset: number, text: string) {
  const ac = new AbortController();
  let got = "";
  let start: number | undefined;
  try {
    for await (const m of sandboxRead(w, task, offset, FD.STDOUT, ac.signal)) {
      assert.ok(m.data.length > 0, "an empty data chunk");
      start ??= Number(m.starting_offset);
      got += m.data.toString();
      if (got.includes(text)) break;
    }
  } finally {
    ac.abort();
  }
  return { got, start };
}

/** Pids of live processes whose command line holds `marker`. */
async function pidsWith(marker: string): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const cmd = await readFile(`/proc/${name}/cmdline`, "latin1").catch(() => "");
    const st = await readFile(`/proc/${name}/stat`, "latin1").catch(() => "");
    if (cmd.includes(marker) && st.slice(st.lastIndexOf(")") + 2)[0] !== "Z")
      pids.push(Number(name));
  }
  return pids;
}

/** A TCP port nothing listens on right now. */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((res) => s.listen(0, "127.0.0.1", res));
  const port = (s.address() as { port: number }).port;
  await new Promise((res) => s.close(res));
  return port;
}

/** Waits until GetTask shows the entrypoint's exit. */
async function exitOf(r: TestRouter, task: string) {
  for (;;) {
    const t = await r.tasks.get(task);
    if (t.entrypointExitCode !== undefined || t.entrypointExitSignal !== undefined) return t;
    await new Promise((res) => setTimeout(res, 20));
  }
}

const stdinWrite = (w: WireClient, task_id: string, offset: number, data: string, eof = false) =>
  w.unary("SandboxStdinWriteV2", { task_id, offset, data: Buffer.from(data), eof });

/** `sh` that echoes stdin lines as `got:LINE` until EOF (exit 4) or a `quit` line (exit 3). */
const ECHO = [
  "sh",
  "-c",
  'echo ready; echo oops >&2; while IFS= read -r l; do [ "$l" = quit ] && exit 3; echo "got:$l"; done; exit 4',
];

for (const { label, oci } of variants) {
  const skip = oci ? await runcSkipReason(oci) : undefined;
  describe(`task entrypoints (${label})`, { skip }, () => {
    let r: TestRouter;
    let w: WireClient;
    before(async () => {
      const config = { entrypointRetain: RETAIN, drainGraceMs: 200 };
      r = oci ? await startRuncRouter({ ...config, ociRuntime: oci }) : await startRouter(config);
      w = new WireClient(r.address);
    });
    after(async () => {
      w?.close();
      await r?.close();
    });

    it("serves stdio by offset, takes stdin by offset, and ends the task when it exits", async () => {
      const task = (await r.tasks.create("", { entrypoint: ECHO })).taskId;
      const live = await readUntil(w, task, 0, "ready\n");
      assert.equal(live.start, 0);
      assert.equal(live.got, "ready\n");
      // Stdin: a write, then a retry of it with more (the replayed prefix is skipped), a gap.
      await stdinWrite(w, task, 0, "a\nb");
      await stdinWrite(w, task, 0, "a\nb\nc\n");
      await expectStatus(stdinWrite(w, task, 100, "x"), grpc.status.OUT_OF_RANGE);
      const echoed = await readUntil(w, task, 6, "got:c\n");
      assert.equal(echoed.start, 6);
      assert.equal(echoed.got, "got:a\ngot:b\ngot:c\n");
      // An exec of the task, and the entrypoint is no exec of it.
      await w.start({ task_id: task, exec_id: "sleeper", command_args: ["sleep", "1000"] });
      assert.deepEqual(
        r.daemon.tasks.listExecs(task).map((e) => e.execId),
        ["sleeper"],
      );
      assert.equal((await r.tasks.get(task)).state, TaskState.RUNNING);
      // EOF at the current offset: the loop ends, the entrypoint exits 4.
      await stdinWrite(w, task, 6, "", true);
      const all = await readAll(w, task, 0);
      assert.equal(all.start, 0);
      assert.equal(all.data.toString(), "ready\ngot:a\ngot:b\ngot:c\n");
      const err = await readAll(w, task, 0, FD.STDERR);
      assert.equal(err.data.toString(), "oops\n");
      // Re-readable after exit, from the middle; past the end is OUT_OF_RANGE.
      const mid = await readAll(w, task, 10);
      assert.equal(mid.start, 10);
      assert.equal(mid.data.toString(), "ready\ngot:a\ngot:b\ngot:c\n".slice(10));
      await expectStatus(readAll(w, task, 1000), grpc.status.OUT_OF_RANGE);
      const end = await readAll(w, task, all.data.length);
      assert.equal(end.data.length, 0);
      // The task ended: exit code shown, its exec killed, new execs refused.
      const t = await r.tasks.get(task);
      assert.equal(t.state, TaskState.STOPPED);
      assert.equal(t.entrypointExitCode, 4);
      assert.equal(t.entrypointExitSignal, undefined);
      assert.ok(t.entrypointEndedAtMs > 0n);
      assert.deepEqual(t.entrypoint, ECHO);
      assert.match(t.stopReason, /entrypoint exited \(code 4\)/);
      assert.deepEqual(await w.wait(task, "sleeper"), { signal: 9 });
      await expectStatus(
        w.start({ task_id: task, exec_id: "late", command_args: ["true"] }),
        grpc.status.FAILED_PRECONDITION,
        /entrypoint exited/,
      );
      // Stdin after EOF: an EOF-only write with an old offset is OK, new data is not.
      await stdinWrite(w, task, 0, "", true);
      await expectStatus(stdinWrite(w, task, 6, "more\n"), grpc.status.FAILED_PRECONDITION);
      await r.tasks.terminate(task);
    });

    it("keeps only the newest output: starting_offset above the requested offset", async () => {
      const task = (await r.tasks.create("", { entrypoint: ["seq", "1", "40000"] })).taskId;
      let expected = "";
      for (let i = 1; i <= 40000; i++) expected += `${i}\n`;
      const total = Buffer.byteLength(expected);
      assert.equal((await exitOf(r, task)).entrypointExitCode, 0);
      const all = await readAll(w, task, 0);
      const start = all.start ?? -1;
      assert.ok(start > 0, `starting_offset ${start} > 0`);
      assert.ok(total - start >= RETAIN, `kept ${total - start} bytes, at least ${RETAIN}`);
      assert.ok(total - start <= 2 * RETAIN + 4096, `kept ${total - start} bytes`);
      assert.equal(all.data.toString(), expected.slice(start));
      // A requested offset inside what is kept is served as asked.
      const mid = await readAll(w, task, start + 100);
      assert.equal(mid.start, start + 100);
      assert.equal(mid.data.toString(), expected.slice(start + 100));
      // Stdin data after the exit (no EOF was sent): dropped with OK, as for an exec.
      await stdinWrite(w, task, 0, "late\n");
      // The dropped bytes were freed on disk too (agent runtimes: a sparse KEY.out).
      const dirs = [
        join(r.dataDir, "tasks", task, "agent"),
        join(r.dataDir, "runc", "bundles", task, "agent"),
      ];
      let checked = 0;
      for (const dir of dirs) {
        for (const name of await readdir(dir).catch(() => [] as string[])) {
          if (!name.endsWith(".out")) continue;
          const st = await stat(join(dir, name));
          if (st.size !== total) continue;
          assert.ok(st.blocks * 512 < total, `${name}: ${st.blocks * 512} bytes allocated`);
          checked++;
        }
      }
      // runsc tasks have no agent (no --preserve-fds): their entrypoint's output is in memory.
      if (oci === RUNSC) assert.equal(checked, 0);
      else assert.equal(checked, 1, "the entrypoint's output file was not found");
      await r.tasks.terminate(task);
    });

    it("a reader that falls behind retention mid-stream gets UNAVAILABLE and resumes at its offset", async () => {
      // 64 MiB of 17-byte lines: far more than the transport can hold for a paused reader,
      // so retention (16 KiB) frees bytes this stream has not yet yielded.
      const LINE = "0123456789abcdef\n";
      const total = 64 * 1024 * 1024;
      const task = (
        await r.tasks.create("", {
          entrypoint: ["sh", "-c", `echo start; read go; yes ${LINE.trim()} | head -c ${total}`],
        })
      ).taskId;
      const HEAD = "start\n".length;
      const expectAt = (offset: number, data: Buffer) => {
        for (let i = 0; i < data.length; i += 4099) {
          assert.equal(
            String.fromCharCode(data[i] as number),
            LINE[(offset + i - HEAD) % LINE.length],
            `byte at offset ${offset + i}`,
          );
        }
      };
      const it = sandboxRead(w, task, 0)[Symbol.asyncIterator]();
      const first = await it.next();
      assert.equal(first.done, false);
      assert.equal(Number(first.value.starting_offset), 0);
      assert.equal(first.value.data.toString(), "start\n");
      let pos = HEAD;
      // The reader stalls (its transport window fills) while the entrypoint writes the rest.
      await stdinWrite(w, task, 0, "go\n");
      assert.equal((await exitOf(r, task)).entrypointExitCode, 0);
      const err = await (async () => {
        try {
          for (;;) {
            const m = await it.next();
            if (m.done) return undefined;
            assert.equal(Number(m.value.starting_offset), pos, "no gap inside one stream");
            assert.ok(m.value.data.length > 0, "an empty data chunk");
            expectAt(pos, m.value.data);
            pos += m.value.data.length;
          }
        } catch (e) {
          return e as grpc.ServiceError;
        }
      })();
      assert.ok(err, `the stream ended at ${pos} of ${total} without an error`);
      assert.equal(err.code, grpc.status.UNAVAILABLE, err.message);
      // The router names the offset it had sent up to. The client may have been handed less:
      // grpc-js gives a call's error status at once, dropping messages that arrived but were
      // not yet read (subchannel-call.js, maybeOutputStatus), as when the last chunks and the
      // status come in one read. So that offset is at or past the client's, never before it.
      const named = Number(/reopen at offset (\d+)\b/.exec(err.message)?.[1] ?? -1);
      assert.ok(named >= pos, `the error names offset ${named}, before the ${pos} received`);
      assert.ok(named < HEAD + total - RETAIN, `stopped at ${named}, before what is kept`);
      // Reopened at the offset it reached: rebased to the oldest byte kept, then to the end.
      const rest = await readAll(w, task, pos);
      const start = rest.start ?? -1;
      assert.ok(start > named, `starting_offset ${start} > ${named} (and ${pos})`);
      assert.ok(HEAD + total - start >= RETAIN, `kept ${HEAD + total - start} bytes`);
      assert.equal(start + rest.data.length, HEAD + total);
      expectAt(start, rest.data);
      await r.tasks.terminate(task);
    });

    it("readiness: a tcp probe of the server the entrypoint runs", async () => {
      const port = await freePort();
      // node: the host's, which the default runc root has too; it exits at stdin's EOF.
      const server = [
        `require("net").createServer((s) => s.end()).listen(${port}, "127.0.0.1");`,
        'process.stdin.on("end", () => process.exit(0)).resume();',
      ].join("");
      const task = (
        await r.tasks.create("", {
          entrypoint: [process.execPath, "-e", server],
          readinessProbe: `tcp:${port}`,
        })
      ).taskId;
      const ready = await w.unary(
        "SandboxWaitUntilReady",
        { task_id: task, timeout: 60 },
        { deadlineMs: 65_000 },
      );
      assert.equal(typeof ready.ready_at, "number");
      await stdinWrite(w, task, 0, "", true);
      assert.equal((await exitOf(r, task)).entrypointExitCode, 0);
      await r.tasks.terminate(task);
    });

    it("task rm kills a running entrypoint", async (t) => {
      const marker = randomUUID();
      const task = (
        await r.tasks.create("", { entrypoint: ["sh", "-c", `echo up; sleep 1000 # ${marker}`] })
      ).taskId;
      await readUntil(w, task, 0, "up\n");
      // gVisor runs the task's processes in its own kernel: they are not in this /proc.
      const visible = oci !== RUNSC;
      if (visible) assert.equal((await pidsWith(marker)).length, 1);
      else t.diagnostic("gVisor: the task's processes are not in this /proc, pids not checked");
      await r.tasks.terminate(task);
      if (visible) assert.deepEqual(await pidsWith(marker), []);
      await expectStatus(readAll(w, task, 0), grpc.status.FAILED_PRECONDITION, /not running/);
    });

    it("an entrypoint that cannot start fails CreateTask and leaves no task", async () => {
      const fails: [Parameters<TestRouter["tasks"]["create"]>[1], RegExp][] = [
        [{ entrypoint: ["no-such-program-xyz"] }, /no-such-program-xyz.*command not found/],
        [{ entrypoint: ["/etc/passwd"] }, /Permission denied/],
        [{ entrypoint: ["true"], entrypointWorkdir: "/no/such/dir" }, /\/no\/such\/dir/],
      ];
      for (const [opts, re] of fails) {
        await assert.rejects(r.tasks.create("bad", opts), (e: Error) => {
          assert.match(e.message, re);
          assert.match(e.message, /FAILED_PRECONDITION|FailedPrecondition|cannot start/);
          return true;
        });
        await expectStatus(r.tasks.get("bad"), grpc.status.NOT_FOUND).catch(async () => {
          await assert.rejects(r.tasks.get("bad"), /not found/);
        });
        await assert.rejects(stat(join(r.dataDir, "tasks", "bad")));
      }
      await assert.rejects(
        r.tasks.create("bad", { entrypointWorkdir: "/tmp" }),
        /needs an entrypoint/,
      );
      // A task without an entrypoint: the sandbox RPCs say so.
      const plain = await r.newTask();
      await expectStatus(
        stdinWrite(w, plain, 0, "x"),
        grpc.status.FAILED_PRECONDITION,
        /no entrypoint/,
      );
      await expectStatus(readAll(w, plain, 0), grpc.status.FAILED_PRECONDITION, /no entrypoint/);
      await r.tasks.terminate(plain);
    });
  });
}
