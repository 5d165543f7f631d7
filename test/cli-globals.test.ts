import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { verbOf } from "../src/cli/globals.ts";
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
