/**
 * The host runtime starts pipe execs through the spawner (native/spawner.c),
 * not with a fork of the router, and keeps every guarantee of a plain spawn:
 * argv[0] as given, the complete env (nothing inherited), cwd, a session of
 * its own with default signals, merged stderr in write order, exact exit
 * status, and a shell's 127/126 reasons. This is the path of host execs
 * without a task agent (the helper not built); with one, see
 * conformance-exec and exec-restart.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { HostRuntime } from "../src/runtime/host/host-runtime.ts";
import type { Proc, SpawnSpec, TaskEnv } from "../src/runtime/runtime.ts";
import { collect } from "./helpers/router.ts";

/** Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, session, ...]. */
function statOf(pid: number): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
}

describe("host runtime: pipe execs through the spawner", () => {
  // Made when the suite runs (not when a --test-name-pattern run only loads it).
  let dir = "";
  let rt: HostRuntime;
  let env: TaskEnv;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "host-spawn-"));
    rt = new HostRuntime(dir, { agent: false });
    env = await rt.prepareTask("t");
  });
  after(() => {
    rt?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const start = (argv: string[], opts: Partial<SpawnSpec> = {}) =>
    rt.spawn("t", {
      argv,
      env: env.baseEnv,
      cwd: env.defaultWorkdir,
      stdout: "pipe",
      stderr: "pipe",
      ...opts,
    });
  const output = async (p: Proc) => {
    p.stdin.end();
    const [out, err, status] = await Promise.all([
      p.stdout ? collect(p.stdout) : Buffer.alloc(0),
      p.stderr ? collect(p.stderr) : Buffer.alloc(0),
      p.exited,
    ]);
    return { out: out.toString(), err: err.toString(), status, startError: p.startError };
  };
  const run = async (argv: string[], opts: Partial<SpawnSpec> = {}) =>
    output(await start(argv, opts));

  it("is the spawner's child, not the router's, in a session of its own", async () => {
    const p = await start(["sleep", "30"]);
    try {
      const pid = p.pid as number;
      const [, ppid, pgrp, session] = statOf(pid);
      assert.notEqual(Number(ppid), process.pid);
      assert.match(readFileSync(`/proc/${ppid}/comm`, "utf8"), /^taskrouter-spaw/);
      assert.deepEqual([Number(pgrp), Number(session)], [pid, pid]);
    } finally {
      p.signalGroup("SIGKILL");
    }
    assert.deepEqual((await output(p)).status, { signal: 9 });
  });

  it("gives argv[0] as given, the complete env and nothing else, the cwd, default signals", async () => {
    const r = await run(
      ["sh", "-c", 'echo "$0|$(pwd)"; env | sort; grep -E "^Sig(Ign|Blk)" /proc/self/status'],
      { env: { PATH: "/usr/bin:/bin", ONLY: "this one" }, cwd: "/tmp" },
    );
    assert.equal(
      r.out,
      "sh|/tmp\nONLY=this one\nPATH=/usr/bin:/bin\nPWD=/tmp\n" +
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
    );
    assert.deepEqual(r.status, { code: 0 });
  });

  it("merges stderr into stdout in write order, and keeps code and signal apart", async () => {
    const r = await run(["sh", "-c", "echo 1; echo 2 >&2; echo 3; kill -TERM $$"], {
      stderr: "stdout",
    });
    assert.equal(r.out, "1\n2\n3\n");
    assert.deepEqual(r.status, { signal: 15 });
    assert.deepEqual((await run(["sh", "-c", "exit 137"])).status, { code: 137 });
  });

  it("reports a program that cannot start as a shell does", async () => {
    const missing = await run(["no-such-program-here"]);
    assert.deepEqual(missing.status, { code: 127 });
    assert.equal(missing.startError, "no-such-program-here: command not found");
    const denied = await run(["/etc/passwd"], { stderr: "stdout" });
    assert.deepEqual(denied.status, { code: 126 });
    assert.equal(denied.startError, "/etc/passwd: Permission denied");
  });

  it("runs a script without #! under /bin/sh, and a relative path from the cwd", async () => {
    writeFileSync(join(env.defaultWorkdir, "script"), 'echo "ran: $*"\n', { mode: 0o755 });
    const r = await run(["./script", "a", "b"]);
    assert.equal(r.out, "ran: a b\n");
    assert.deepEqual(r.status, { code: 0 });
  });

  it("takes long argument lists (beyond the spawner's old 255)", async () => {
    const many = Array.from({ length: 5000 }, (_, i) => `arg-${i}`);
    const r = await run(["sh", "-c", 'echo "$#"', "sh", ...many]);
    assert.equal(r.out, "5000\n");
  });

  it("starts a new spawner when its helper died; the running exec resolves as SIGKILLed", async () => {
    const p = await start(["sleep", "30"]);
    const pid = p.pid as number;
    const helper = Number(statOf(pid)[1]);
    process.kill(helper, "SIGKILL");
    try {
      assert.deepEqual(await p.exited, { signal: 9 });
      const r = await run(["sh", "-c", "echo again"]);
      assert.equal(r.out, "again\n");
    } finally {
      p.signalGroup("SIGKILL");
    }
  });
});
