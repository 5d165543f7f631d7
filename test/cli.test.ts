import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { TasksClient } from "../src/client/admin.ts";
import { RouterClient } from "../src/client/client.ts";
import { alive, killSessions, pidsFrom, waitGone, waitSessionsGone } from "./helpers/procs.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "bin", "taskrouter.js");

/** Session ids (= exec pids) of every exec this file started, for the final check. */
const started = new Set<number>();
/** CLI processes still running (killed by pid in the cleanup). */
const children = new Set<ChildProcess>();

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: Buffer;
}

/** The CLI's environment: ours without TASKROUTER_SERVER, plus `extra`. */
function cliEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  // The source as it is now, not a dist/ build that may be older.
  const env: NodeJS.ProcessEnv = { ...process.env, TASKROUTER_FROM_SOURCE: "1", ...extra };
  if (!("TASKROUTER_SERVER" in extra)) delete env.TASKROUTER_SERVER;
  return env;
}

/** Starts `node bin/taskrouter.js ARGS` as a real process. */
function spawnCli(args: string[], env: NodeJS.ProcessEnv = cliEnv()): ChildProcess {
  // serve defaults to runc containers as root; these tests want host tasks.
  if (args[0] === "serve" && !args.includes("--runtime")) args = [...args, "--runtime", "host"];
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    env,
    stdio: ["pipe", "pipe", "pipe"],
  });
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/** Runs the CLI to its end; `input` (when given) is written to its stdin, then EOF. */
function runCli(
  args: string[],
  opts: { input?: Buffer; env?: NodeJS.ProcessEnv; keepStdinOpen?: boolean } = {},
): Promise<Result> {
  const child = spawnCli(args, opts.env);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout?.on("data", (c: Buffer) => out.push(c));
  child.stderr?.on("data", (c: Buffer) => err.push(c));
  child.stdin?.on("error", () => {});
  if (opts.input) child.stdin?.end(opts.input);
  else if (!opts.keepStdinOpen) child.stdin?.end();
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code, signal) => {
      child.stdin?.destroy();
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err) });
    });
  });
}

/** Resolves with the first match of `re` in the child's stdout. */
function waitForLine(child: ChildProcess, re: RegExp): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let text = "";
    const onData = (c: Buffer) => {
      text += c.toString();
      const m = re.exec(text);
      if (m) {
        child.stdout?.off("data", onData);
        resolve(m);
      }
    };
    child.stdout?.on("data", onData);
    child.once("exit", (code) =>
      reject(new Error(`exited (${code}) before printing ${re}: ${JSON.stringify(text)}`)),
    );
  });
}

function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: string | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
}

after(async () => {
  for (const c of children) if (c.pid !== undefined) c.kill("SIGKILL");
  await killSessions(started);
});

describe("taskrouter CLI against an in-process router", () => {
  let r: TestRouter;
  let server: string[];
  /** Records the pid of every exec the router holds (each leads its own session). */
  const snapshot = () => {
    for (const t of r.daemon.tasks.list())
      for (const e of t.listExecs()) if (e.pid !== undefined) started.add(e.pid);
  };
  before(async () => {
    r = await startRouter();
    server = ["--server", r.address];
  });
  afterEach(snapshot);
  after(() => r.close());

  it("task create --id x prints x", async () => {
    const res = await runCli([...server, "task", "create", "--id", "x"]);
    assert.equal(res.code, 0, res.stderr.toString());
    assert.equal(res.stdout.toString(), "x\n");
  });

  it("task ls lists it", async () => {
    const res = await runCli([...server, "task", "ls"]);
    assert.equal(res.code, 0, res.stderr.toString());
    const rows = res.stdout.toString().trimEnd().split("\n");
    assert.match(rows[0] ?? "", /^TASK ID\s/);
    assert.ok(
      rows.some((l) => /^x\s+running\s/.test(l)),
      res.stdout.toString(),
    );
    const quiet = await runCli([...server, "task", "ls", "-q"]);
    assert.equal(quiet.stdout.toString(), "x\n");
  });

  it("exec streams stdout and stderr apart and exits with the command's code", async () => {
    const res = await runCli([
      ...server,
      "exec",
      "x",
      "--",
      "sh",
      "-c",
      "echo out; echo err >&2; exit 7",
    ]);
    assert.equal(res.stdout.toString(), "out\n");
    assert.equal(res.stderr.toString(), "err\n");
    assert.equal(res.code, 7);
  });

  it("exec exits 128 + signal when a signal ended the command", async () => {
    const res = await runCli([...server, "exec", "x", "--", "sh", "-c", "kill -9 $$"]);
    assert.equal(res.code, 137, res.stderr.toString());
  });

  it("exec -i forwards stdin byte-exact (binary, 1 MiB) and its EOF", {
    timeout: 60_000,
  }, async () => {
    const input = Buffer.concat([Buffer.from([0, 1, 0, 255, 10, 0]), randomBytes(1024 * 1024)]);
    const res = await runCli([...server, "exec", "-i", "x", "--", "cat"], { input });
    assert.equal(res.code, 0, res.stderr.toString());
    assert.equal(res.stdout.length, input.length);
    assert.ok(res.stdout.equals(input), "cat echoed the exact bytes");
  });

  it("exec without -i closes the command's stdin at once", { timeout: 60_000 }, async () => {
    // The CLI's own stdin stays open: only the router-side EOF can end `cat`.
    const res = await runCli([...server, "exec", "x", "--", "cat"], { keepStdinOpen: true });
    assert.equal(res.code, 0, res.stderr.toString());
    assert.equal(res.stdout.length, 0);
  });

  it("exec --env and --workdir", async () => {
    const res = await runCli([
      ...server,
      "exec",
      "--env",
      "A=b",
      "-e",
      "C=d e",
      "--workdir",
      "/tmp",
      "x",
      "--",
      "sh",
      "-c",
      'echo "$A|$C"; pwd',
    ]);
    assert.equal(res.code, 0, res.stderr.toString());
    assert.equal(res.stdout.toString(), "b|d e\n/tmp\n");
  });

  it("exec --timeout kills the command: exit 137", { timeout: 60_000 }, async () => {
    const res = await runCli([...server, "exec", "--timeout", "1", "x", "--", "sleep", "300"]);
    assert.equal(res.code, 137, res.stderr.toString());
  });

  it("TASKROUTER_SERVER works instead of --server", async () => {
    const res = await runCli(["exec", "x", "--", "echo", "via env"], {
      env: cliEnv({ TASKROUTER_SERVER: r.address }),
    });
    assert.equal(res.code, 0, res.stderr.toString());
    assert.equal(res.stdout.toString(), "via env\n");
  });

  it("exec on an unknown task exits 125 with a one-line error", async () => {
    const res = await runCli([...server, "exec", "nosuch", "--", "true"]);
    assert.equal(res.code, 125);
    assert.equal(res.stdout.length, 0);
    const err = res.stderr.toString();
    assert.match(err, /^taskrouter: [^\n]+\n$/);
    assert.match(err, /nosuch/);
  });

  it("task rm x removes it from task ls", async () => {
    const rmRes = await runCli([...server, "task", "rm", "x"]);
    assert.equal(rmRes.code, 0, rmRes.stderr.toString());
    const res = await runCli([...server, "task", "ls", "-q"]);
    assert.equal(res.code, 0, res.stderr.toString());
    assert.ok(!res.stdout.toString().split("\n").includes("x"), res.stdout.toString());
  });
});

describe("taskrouter serve as a real process", () => {
  let dataDir: string;
  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "taskrouter-cli-serve-"));
  });
  after(() => rm(dataDir, { recursive: true, force: true }));

  it("prints its address, serves calls, and on SIGTERM exits 0 leaving no exec behind", async () => {
    const serve = spawnCli([
      "serve",
      "--auth",
      "none",
      "--listen",
      "127.0.0.1:0",
      "--data-dir",
      dataDir,
    ]);
    serve.stdin?.end();
    const [, address] = (await waitForLine(
      serve,
      /listening on (127\.0\.0\.1:\d+)/,
    )) as unknown as [string, string];
    const client = new RouterClient(address);
    try {
      const task = (await new TasksClient(client).create("s")).taskId;
      assert.equal(task, "s");
      const id = await client.start(task, ["sh", "-c", "echo $$; exec sleep 100"], {
        stdout: "pipe",
      });
      let text = "";
      for await (const c of client.read(task, id, "stdout")) {
        text += c.toString();
        if (text.includes("\n")) break;
      }
      const [pid] = pidsFrom(text, 1) as [number];
      started.add(pid);
      assert.ok(await alive(pid), "the exec runs");
      const exited = exitOf(serve);
      serve.kill("SIGTERM");
      assert.deepEqual(await exited, { code: 0, signal: null });
      assert.deepEqual(await waitGone([pid]), [], "the exec's process is gone");
      assert.deepEqual(await waitSessionsGone([pid]), []);
    } finally {
      client.close();
      if (serve.exitCode === null && serve.signalCode === null) serve.kill("SIGKILL");
    }
  });

  it("--demo prints a ready-to-paste exec line that works", async () => {
    const serve = spawnCli(["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--demo"]);
    serve.stdin?.end();
    try {
      const [line] = await waitForLine(serve, /[^\n]*exec demo --[^\n]*\n/);
      const m = /npx taskrouter (.*)$/.exec(line.trim());
      assert.ok(m?.[1], `an npx taskrouter line: ${JSON.stringify(line)}`);
      const args = m[1].split(/\s+/);
      assert.deepEqual(args.slice(args.indexOf("exec")), ["exec", "demo", "--", "uname", "-a"]);
      // The line starts with TASKROUTER_TOKEN=<token> (auth is on by default).
      const token = /^\s*TASKROUTER_TOKEN=(\S+) npx /.exec(line)?.[1];
      assert.ok(token, `a token in the line: ${JSON.stringify(line)}`);
      const res = await runCli(args, { env: cliEnv({ TASKROUTER_TOKEN: token }) });
      assert.equal(res.code, 0, res.stderr.toString());
      assert.match(res.stdout.toString(), /^Linux /);
      const exited = exitOf(serve);
      serve.kill("SIGTERM");
      assert.deepEqual(await exited, { code: 0, signal: null });
    } finally {
      if (serve.exitCode === null && serve.signalCode === null) serve.kill("SIGKILL");
    }
  });
});

it("leaves no process started by this file", async () => {
  assert.ok(started.size > 0);
  assert.deepEqual(await waitSessionsGone(started), []);
  assert.equal(children.size, 0, "every CLI process has exited");
});
