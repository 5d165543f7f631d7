import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { after, describe, it } from "node:test";
import { nativeHelper } from "../src/runtime/native.ts";
import { lazySpawner, type Spawned, Spawner } from "../src/runtime/spawner.ts";
import { alive, waitGone } from "./helpers/procs.ts";
import { collect } from "./helpers/router.ts";

const HELPER = nativeHelper("taskrouter-spawner");
const ENV = { PATH: "/usr/bin:/bin" };

/** Session id (field 6 of /proc/<pid>/stat). */
function sessionOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[3]);
}

describe("the spawner (native/spawner.c) starts processes for the router", () => {
  const spawner = Spawner.start(HELPER, ENV);
  const started: number[] = [];
  const sh = async (script: string, opts: Partial<Parameters<Spawner["spawn"]>[2]> = {}) => {
    const p = await spawner.spawn("/bin/sh", ["-c", script], {
      cwd: "/",
      stdout: "pipe",
      stderr: "pipe",
      ...opts,
    });
    started.push(p.pid);
    return p;
  };
  const output = async (p: Spawned) => {
    const [out, err, exit] = await Promise.all([
      p.stdout ? collect(p.stdout) : Buffer.alloc(0),
      p.stderr ? collect(p.stderr) : Buffer.alloc(0),
      p.exited,
    ]);
    return { out: out.toString(), err: err.toString(), ...exit };
  };
  after(async () => {
    for (const pid of started) if (await alive(pid)) process.kill(pid, "SIGKILL");
    const helper = spawner.pid as number;
    spawner.close();
    assert.deepEqual(await waitGone([helper]), [], "the helper did not exit on close");
  });

  it("pipes stdin, stdout and stderr apart, in the cwd asked for, with its env", async () => {
    const p = await sh('read line; echo "out:$line:$(pwd):$PATH"; echo err >&2', { cwd: "/tmp" });
    p.stdin.end("hello\n");
    const r = await output(p);
    assert.equal(r.out, "out:hello:/tmp:/usr/bin:/bin\n");
    assert.equal(r.err, "err\n");
    assert.deepEqual(r.status, { code: 0 });
    assert.equal(r.report, "");
  });

  it("tells an exit code from a signal, and returns what fd 3 got", async () => {
    const code = await output(await sh("echo code 7 >&3; exit 137", { report: true }));
    assert.deepEqual(code.status, { code: 137 });
    assert.equal(code.report, "code 7\n");
    const sig = await output(await sh("kill -9 $$", { report: true }));
    assert.deepEqual(sig.status, { signal: 9 });
  });

  it("starts each process with no signal ignored or blocked (its own are)", async () => {
    const r = await output(await sh("grep -E '^Sig(Ign|Blk)' /proc/self/status"));
    assert.equal(r.out, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
  });

  it("refuses more arguments than the helper takes, before sending", async () => {
    await assert.rejects(
      spawner.spawn("/bin/true", Array(300).fill("x"), {
        cwd: "/",
        stdout: "pipe",
        stderr: "pipe",
      }),
      /more than 255 arguments/,
    );
  });

  it("gives /dev/null where no pipe is asked for, and no fd 3 without `report`", async () => {
    const p = await sh("echo lost; echo lost >&2; [ -e /dev/fd/3 ] && exit 3; exit 0", {
      stdout: "ignore",
      stderr: "ignore",
    });
    assert.equal(p.stdout, null);
    assert.equal(p.stderr, null);
    assert.deepEqual((await p.exited).status, { code: 0 });
  });

  it("moves every byte of a large output, in order", async () => {
    const data = randomBytes(8 * 1024 * 1024);
    const p = await sh("cat");
    p.stdin.end(data);
    const r = await Promise.all([collect(p.stdout as NonNullable<Spawned["stdout"]>), p.exited]);
    assert.ok(r[0].equals(data), `got ${r[0].length} bytes of ${data.length}`);
  });

  it("starts each process as the leader of its own session", async () => {
    const p = await sh("sleep 30", { stdout: "ignore", stderr: "ignore" });
    assert.equal(sessionOf(p.pid), p.pid);
    process.kill(-p.pid, "SIGTERM");
    assert.deepEqual((await p.exited).status, { signal: 15 });
  });

  it("rejects a program that cannot start, and nothing runs", async () => {
    await assert.rejects(
      spawner.spawn("/nonexistent/program", [], { cwd: "/", stdout: "pipe", stderr: "pipe" }),
      /ENOENT/,
    );
    await assert.rejects(
      spawner.spawn("/bin/true", [], { cwd: "/nonexistent", stdout: "pipe", stderr: "pipe" }),
      /ENOENT/,
    );
  });
});

describe("the spawner's wire format", () => {
  /** Sends raw request frames to a fresh helper; returns its event lines once it has answered `n`. */
  const exchange = async (frames: Buffer[], n: number): Promise<string[]> => {
    const helper = spawn(HELPER, [], { env: ENV, stdio: ["pipe", "pipe", "inherit"] });
    try {
      let out = "";
      const lines = new Promise<string[]>((resolve) => {
        helper.stdout.on("data", (c: Buffer) => {
          out += c.toString();
          const got = out.split("\n").filter(Boolean);
          if (got.length >= n) resolve(got);
        });
      });
      for (const f of frames) {
        const head = Buffer.alloc(4);
        head.writeUInt32LE(f.length);
        helper.stdin.write(Buffer.concat([head, f]));
      }
      return await lines;
    } finally {
      helper.stdin.end();
      assert.deepEqual(
        await waitGone([helper.pid as number]),
        [],
        "the helper did not exit at EOF",
      );
    }
  };

  it("answers a malformed request with `failed`, and nothing runs", async () => {
    const tooMany = ["spawn", "b", "-", "/", "/bin/true", ...Array(300).fill("x")].join("\0");
    const lines = await exchange(
      [
        Buffer.from("spawn\0a\0-\0/\0/bin/true"),
        Buffer.from(`${tooMany}\0`),
        Buffer.from("nonsense\0c\0"),
      ],
      3,
    );
    assert.deepEqual(lines, ["failed a 22", "failed b 7", "failed c 22"]);
  });
});

describe("lazySpawner", () => {
  it("replaces a helper that died; the dead one's processes resolve as SIGKILLed and run on", async () => {
    const lazy = lazySpawner(HELPER, ENV);
    const first = lazy.get();
    const p = await first.spawn("/bin/sleep", ["30"], {
      cwd: "/",
      stdout: "ignore",
      stderr: "ignore",
    });
    try {
      process.kill(first.pid as number, "SIGKILL");
      assert.deepEqual((await p.exited).status, { signal: 9 });
      assert.equal(await alive(p.pid), true, "the process died with the helper");
      const second = lazy.get();
      assert.notEqual(second.pid, first.pid);
      const q = await second.spawn("/bin/true", [], { cwd: "/", stdout: "pipe", stderr: "pipe" });
      assert.deepEqual((await q.exited).status, { code: 0 });
    } finally {
      process.kill(p.pid, "SIGKILL");
      const helper = lazy.get().pid as number;
      lazy.close();
      assert.deepEqual(await waitGone([p.pid, helper]), []);
    }
  });
});
