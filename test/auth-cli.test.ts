/**
 * Authentication through the CLI (token issue, --token, TASKROUTER_TOKEN,
 * serve --demo/--auth) and the --auth none loopback rule.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { DEFAULT_CONFIG, startDaemon } from "../src/daemon.ts";
import { isLoopback } from "../src/edge.ts";
import { cliEnv, killAll, runCli, spawnCli, stopCli, waitForOutput } from "./helpers/cli-run.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";

describe("--auth none", () => {
  it("is refused on a non-loopback listen address, before anything is served", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "taskrouter-test-"));
    try {
      await assert.rejects(
        startDaemon(
          {
            ...DEFAULT_CONFIG,
            runtime: "host",
            listen: "0.0.0.0:0",
            dataDir,
            auth: { mode: "none" },
          },
          pino({ level: "silent" }),
        ),
        { kind: "InvalidArgument", message: /--auth none is only allowed on a loopback/ },
      );
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it("knows loopback addresses", () => {
    for (const a of ["127.0.0.1:1", "127.1.2.3:1", "[::1]:1", "localhost:1", ":7878"]) {
      assert.equal(isLoopback(a), true, a);
    }
    for (const a of ["0.0.0.0:1", "[::]:1", "10.0.0.1:1", "example.com:1", "[::2]:1"]) {
      assert.equal(isLoopback(a), false, a);
    }
  });
});

describe("CLI: token issue, --token, TASKROUTER_TOKEN, serve --demo/--auth", () => {
  let r: TestRouter;
  const dirs: string[] = [];
  before(async () => {
    r = await startRouter({ runtime: "host", auth: { mode: "jwt" } });
    await r.newTask("t1");
  });
  after(async () => {
    await killAll();
    await r.close();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it("token issue --task / --admin mint tokens the router accepts", async () => {
    const issued = await runCli(["token", "issue", "--task", "t1", "--data-dir", r.dataDir]);
    assert.equal(issued.code, 0, issued.stderr);
    const token = issued.stdout.trim();
    assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
    const viaEnv = await runCli(
      ["--server", r.address, "exec", "t1", "--", "echo", "hi"],
      cliEnv({ TASKROUTER_TOKEN: token }),
    );
    assert.deepEqual([viaEnv.code, viaEnv.stdout, viaEnv.stderr], [0, "hi\n", ""]);
    const denied = await runCli(["--server", r.address, "--token", token, "task", "ls"]);
    assert.equal(denied.code, 125);
    assert.match(denied.stderr, /PermissionDenied/);
    assert.ok(!denied.stderr.includes(token));
    const admin = await runCli([
      "token",
      "issue",
      "--admin",
      "--ttl",
      "5m",
      "--data-dir",
      r.dataDir,
    ]);
    assert.equal(admin.code, 0, admin.stderr);
    const ls = await runCli([
      "--server",
      r.address,
      "--token",
      admin.stdout.trim(),
      "task",
      "ls",
      "-q",
    ]);
    assert.deepEqual([ls.code, ls.stdout], [0, "t1\n"]);
  });

  it("client verbs without a token fail with Unauthenticated (exit 125)", async () => {
    const res = await runCli(["--server", r.address, "exec", "t1", "--", "true"]);
    assert.equal(res.code, 125);
    assert.match(res.stderr, /Unauthenticated/);
  });

  it("token issue refuses a data dir without a key, and needs --task or --admin", async () => {
    const empty = await mkdtemp(join(tmpdir(), "taskrouter-test-"));
    dirs.push(empty);
    const nokey = await runCli(["token", "issue", "--admin", "--data-dir", empty]);
    assert.equal(nokey.code, 125);
    assert.match(nokey.stderr, /no signing key/);
    const neither = await runCli(["token", "issue", "--data-dir", r.dataDir]);
    assert.equal(neither.code, 125);
    assert.match(neither.stderr, /exactly one of --task ID and --admin/);
  });

  it("serve --demo prints a ready-to-paste exec line with a token", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "taskrouter-test-"));
    dirs.push(dataDir);
    const serve = spawnCli([
      "serve",
      "--runtime",
      "host",
      "--demo",
      "--listen",
      "127.0.0.1:0",
      "--data-dir",
      dataDir,
    ]);
    const m = await waitForOutput(
      serve,
      /\n {2}TASKROUTER_TOKEN=(\S+) npx taskrouter --server (\S+) exec demo -- uname -a\n/,
    );
    const res = await runCli(
      ["--server", m[2] as string, "exec", "demo", "--", "uname", "-s"],
      cliEnv({ TASKROUTER_TOKEN: m[1] as string }),
    );
    assert.deepEqual([res.code, res.stdout], [0, "Linux\n"]);
    await stopCli(serve);
  });

  it("serve --auth none: refused on 0.0.0.0, a warning on loopback", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "taskrouter-test-"));
    dirs.push(dataDir);
    const refused = await runCli([
      "serve",
      "--auth",
      "none",
      "--listen",
      "0.0.0.0:0",
      "--data-dir",
      dataDir,
    ]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /--auth none is only allowed on a loopback listen address/);
    const serve = spawnCli([
      "serve",
      "--auth",
      "none",
      "--listen",
      "127.0.0.1:0",
      "--data-dir",
      dataDir,
    ]);
    await Promise.all([
      waitForOutput(serve, /listening on 127\.0\.0\.1:\d+/),
      waitForOutput(serve, /taskrouter: WARNING: authentication is off/, "stderr"),
    ]);
    await stopCli(serve);
  });
});
