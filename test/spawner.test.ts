import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { nativeHelper } from "../src/runtime/native.ts";
import { lazySpawner, type Spawned, Spawner, SpawnFailed } from "../src/runtime/spawner.ts";
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

  it("takes any number of arguments, and refuses a request over its 4 MiB before sending", async () => {
    const many = Array.from({ length: 3000 }, (_, i) => String(i));
    const r = await output(
      await spawner.spawn("/bin/sh", ["-c", 'echo "$#"', "sh", ...many], {
        cwd: "/",
        stdout: "pipe",
        stderr: "pipe",
      }),
    );
    assert.equal(r.out, "3000\n");
    await assert.rejects(
      spawner.spawn("/bin/true", ["x".repeat(5 << 20)], {
        cwd: "/",
        stdout: "pipe",
        stderr: "pipe",
      }),
      /too large/,
    );
  });

  it("gives the process the env asked for (nothing of its own) and argv[0] apart from the file", async () => {
    const env = await output(
      await spawner.spawn("/usr/bin/env", [], {
        cwd: "/",
        stdout: "pipe",
        stderr: "pipe",
        env: { A: "x y=z", B: "" },
      }),
    );
    assert.equal(env.out, "A=x y=z\nB=\n");
    const none = await output(
      await spawner.spawn("/usr/bin/env", [], {
        cwd: "/",
        stdout: "pipe",
        stderr: "pipe",
        env: {},
      }),
    );
    assert.equal(none.out, "");
    const named = await output(
      await spawner.spawn("/bin/sh", ["-c", 'echo "$0"'], {
        cwd: "/",
        stdout: "pipe",
        stderr: "pipe",
        argv0: "custom-name",
      }),
    );
    assert.equal(named.out, "custom-name\n");
  });

  it("merges stderr into the stdout pipe in write order", async () => {
    const p = await sh("echo 1; echo 2 >&2; echo 3; echo 4 >&2", { stderr: "stdout" });
    assert.equal(p.stderr, null);
    const r = await output(p);
    assert.equal(r.out, "1\n2\n3\n4\n");
    const quiet = await sh("echo 1; echo 2 >&2", { stdout: "ignore", stderr: "stdout" });
    assert.deepEqual((await output(quiet)).status, { code: 0 });
  });

  it("runs a script without #! under /bin/sh, as execvp does", async () => {
    const dir = mkdtempSync(join(tmpdir(), "spawner-"));
    try {
      const script = join(dir, "script");
      writeFileSync(script, 'echo "no shebang: $*"\n', { mode: 0o755 });
      const p = await spawner.spawn(script, ["a", "b"], {
        cwd: "/",
        stdout: "pipe",
        stderr: "pipe",
        argv0: "script",
      });
      const r = await output(p);
      assert.equal(r.out, "no shebang: a b\n");
      assert.deepEqual(r.status, { code: 0 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
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
      (err: unknown) => err instanceof SpawnFailed && err.code === "ENOENT",
    );
    await assert.rejects(
      spawner.spawn("/bin/true", [], { cwd: "/nonexistent", stdout: "pipe", stderr: "pipe" }),
      /ENOENT/,
    );
    await assert.rejects(
      spawner.spawn("/etc/passwd", [], { cwd: "/", stdout: "pipe", stderr: "pipe" }),
      (err: unknown) => err instanceof SpawnFailed && err.code === "EACCES",
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
    const lines = await exchange(
      [
        Buffer.from("spawn\0a\0-\0/\0/bin/true"),
        // env counts that leave no PROGRAM, or are no number; 'a' with no argv[0]
        Buffer.from("spawn\0b\0v\0/\x003\0A=1\0B=2\0/bin/true\0"),
        Buffer.from("spawn\0c\0v\0/\0x\0/bin/true\0"),
        Buffer.from("spawn\0d\0a\0/\0/bin/true\0"),
        Buffer.from("nonsense\0e\0"),
      ],
      5,
    );
    assert.deepEqual(lines, [
      "failed a 22",
      "failed b 22",
      "failed c 22",
      "failed d 22",
      "failed e 22",
    ]);
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
