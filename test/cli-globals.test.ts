import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { execOperandGlobals } from "../src/cli/exec-verbs.ts";
import { takeGlobalOptions, verbOf } from "../src/cli/globals.ts";
import { BIN, cliEnv, killAll, ROOT, runCli } from "./helpers/cli-run.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";

describe("CLI global options before or after the verb (as kubectl)", () => {
  let r: TestRouter;
  let token: string;
  before(async () => {
    r = await startRouter({ auth: { mode: "jwt" } });
    token = r.adminToken as string;
  });
  after(async () => {
    await killAll();
    await r?.close();
  });

  it("task create / ls / rm take --server and --token after the verb", async () => {
    const made = await runCli([
      "task",
      "create",
      "--id",
      "after",
      "--server",
      r.address,
      "--token",
      token,
    ]);
    assert.equal(made.code, 0, made.stderr);
    assert.equal(made.stdout.trim(), "after");
    const ls = await runCli(["task", "ls", "-q", "--token", token, "--server", r.address]);
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /^after$/m);
    const rm = await runCli(["task", "rm", "after", `--server=${r.address}`, `--token=${token}`]);
    assert.equal(rm.code, 0, rm.stderr);
  });

  it("exec takes them before its TASK; everything after TASK is the command's", async () => {
    const task = await r.newTask();
    const res = await runCli([
      "exec",
      "--server",
      r.address,
      "--token",
      token,
      task,
      "--",
      "echo",
      "hi",
    ]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout, "hi\n");
    const ls = await runCli(["exec", "--server", r.address, "--token", token, "ls", task]);
    assert.equal(ls.code, 0, ls.stderr);
    const mixed = await runCli([
      "--server",
      r.address,
      "exec",
      "--token",
      token,
      task,
      "--",
      "true",
    ]);
    assert.equal(mixed.code, 0, mixed.stderr);
  });

  it("exec ls / kill / inspect take them anywhere after the verb, after operands too", async () => {
    const task = await r.newTask();
    const id = await r.client.start(task, ["sleep", "100"], { stdout: "pipe" });
    const ls = await runCli(["exec", "ls", task, "--server", r.address, "--token", token]);
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, new RegExp(`^${id}\\s+\\d+\\s+running`, "m"));
    const inspect = await runCli([
      "exec",
      "--token",
      token,
      "inspect",
      task,
      id,
      `--server=${r.address}`,
    ]);
    assert.equal(inspect.code, 0, inspect.stderr);
    assert.equal((JSON.parse(inspect.stdout) as { execId: string }).execId, id);
    const kill = await runCli([
      "--server",
      r.address,
      "exec",
      "kill",
      task,
      "--signal",
      "TERM",
      id,
      "--token",
      token,
    ]);
    assert.equal(kill.code, 0, kill.stderr);
    assert.deepEqual(await r.client.wait(task, id), { signal: 15 });
    // A value option at the end without its value is an error, not an operand.
    const bare = await runCli(["exec", "ls", task, "--token", token, "--server"]);
    assert.equal(bare.code, 1);
    assert.match(bare.stderr, /option '--server <host:port>' argument missing/);
  });

  it("exec TASK GLOBALS -- CMD takes them; after `--` they are the command's", async () => {
    const task = await r.newTask();
    const res = await runCli([
      "exec",
      task,
      "--server",
      r.address,
      "--token",
      token,
      "--",
      "echo",
      "hi",
    ]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout, "hi\n");
    // After `--` (or in a command given without `--`), --server and --token are arguments.
    const env = cliEnv({ TASKROUTER_SERVER: r.address, TASKROUTER_TOKEN: token });
    const argv = ["--server", "127.0.0.1:1", "--token", "x", "--tls", "--", "--"];
    const after = await runCli(["exec", task, "--", "echo", ...argv], env);
    assert.equal(after.code, 0, after.stderr);
    assert.equal(after.stdout, `${argv.join(" ")}\n`);
    const bare = await runCli(["exec", task, "echo", "--server", "127.0.0.1:1", "--", "x"], env);
    assert.equal(bare.code, 0, bare.stderr);
    assert.equal(bare.stdout, "--server 127.0.0.1:1 -- x\n");
    // exec ls -- CMD (a task named ls): nothing before `--` is taken, the command runs as given.
    await r.newTask("ls");
    const named = await runCli(["exec", "ls", "--", "echo", "--token", "t"], env);
    assert.equal(named.code, 0, named.stderr);
    assert.equal(named.stdout, "--token t\n");
  });

  it("before the verb still works, and wins over the same option after it", async () => {
    const res = await runCli([
      "--server",
      r.address,
      "--token",
      token,
      "task",
      "ls",
      "--server",
      "127.0.0.1:1",
    ]);
    assert.equal(res.code, 0, res.stderr);
  });

  it("the environment still applies when no option is given", async () => {
    const env = cliEnv({ TASKROUTER_SERVER: r.address, TASKROUTER_TOKEN: token });
    const res = await runCli(["task", "ls", "-q"], env);
    assert.equal(res.code, 0, res.stderr);
  });

  it("verbOf finds the verb past global options and their values", () => {
    assert.equal(verbOf(["--server", "h:1", "task", "ls"]), "task");
    assert.equal(verbOf(["--server=h:1", "--tls", "exec", "t"]), "exec");
    assert.equal(verbOf(["--token", "exec", "task"]), "task");
    assert.equal(verbOf(["help", "image"]), "image");
    assert.equal(verbOf(["--help"]), undefined);
  });

  it("takeGlobalOptions / execOperandGlobals take only what cannot be a command's", () => {
    assert.deepEqual(takeGlobalOptions(["t", "--server", "h:1", "e", "--tls", "--token=a=b"]), {
      options: [
        ["server", "h:1"],
        ["tls", true],
        ["token", "a=b"],
      ],
      rest: ["t", "e"],
    });
    assert.deepEqual(takeGlobalOptions(["t", "--", "--server", "h:1"]), {
      options: [],
      rest: ["t", "--", "--server", "h:1"],
    });
    assert.deepEqual(takeGlobalOptions(["--tls=1", "--serverx", "v"]).rest, [
      "--tls=1",
      "--serverx",
      "v",
    ]);
    assert.throws(() => takeGlobalOptions(["t", "--tls-ca"]), /--tls-ca <file>' argument missing/);
    // Verb form: anywhere up to `--`.
    assert.deepEqual(execOperandGlobals("kill", ["t", "--tls-ca", "f", "e"]), {
      options: [["tlsCa", "f"]],
      rest: ["t", "e"],
    });
    assert.equal(execOperandGlobals("ls", ["t"]), undefined);
    // Run form: only globals between TASK and the first `--`.
    assert.deepEqual(execOperandGlobals("t", ["--tls", "--", "sh", "--tls"]), {
      options: [["tls", true]],
      rest: ["--", "sh", "--tls"],
    });
    assert.equal(execOperandGlobals("t", ["sh", "--tls", "--", "x"]), undefined);
    assert.equal(execOperandGlobals("t", ["--tls"]), undefined);
    assert.equal(execOperandGlobals("ls", ["--", "--tls"]), undefined);
  });
});

const exec = promisify(execFile);

describe("the compiled CLI (dist/)", () => {
  it("npm run build emits ESM JavaScript with .js imports, and --help runs from it", async () => {
    await exec("npm", ["run", "build", "--silent"], { cwd: ROOT });
    const main = join(ROOT, "dist", "cli", "main.js");
    assert.ok((await stat(main)).isFile());
    // Every relative import of the emitted code names a .js file (rewriteRelativeImportExtensions).
    const bad: string[] = [];
    for (const f of await readdir(join(ROOT, "dist"), { recursive: true })) {
      if (!f.endsWith(".js")) continue;
      const js = await readFile(join(ROOT, "dist", f), "utf8");
      if (/(from |import\()"\.{1,2}\/[^"]*\.ts"/.test(js)) bad.push(f);
    }
    assert.deepEqual(bad, []);
    // bin/ runs dist/ when TASKROUTER_FROM_SOURCE is unset.
    const env = { ...process.env };
    delete env.TASKROUTER_FROM_SOURCE;
    for (const argv of [
      [BIN, "--help"],
      [main, "--help"],
      [BIN, "task", "--help"],
    ]) {
      const { stdout } = await exec(process.execPath, argv, { cwd: ROOT, env });
      assert.match(stdout, /^Usage: taskrouter/);
    }
    const { stdout } = await exec(process.execPath, [BIN, "serve", "--help"], { cwd: ROOT, env });
    assert.match(stdout, /--metrics-listen/);
  });
});
