/**
 * The bundled CLI (scripts/bundle-cli.js: what bin/taskrouter.js runs after
 * `npm ci`): built here from the current source into a directory of its
 * own, then run as real processes: a client verb against a router (exec,
 * cp both ways with the bytes checked, a file replaced), and `serve` itself
 * (listens, runs an exec, logs, exits 0 on SIGTERM).
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { TasksClient } from "../src/client/admin.ts";
import { RouterClient } from "../src/client/client.ts";
import { cliEnv, killAll, ROOT, stopCli, waitForOutput } from "./helpers/cli-run.ts";
import { startRouter, type TestRouter } from "./helpers/router.ts";

const run = promisify(execFile);
/** Two levels below the root, as dist/bundle/ (modules find build/native/ relative to themselves). */
const OUT = join(ROOT, "dist", `bundle-test-${process.pid}`);

describe("the bundled CLI", () => {
  let r: TestRouter;
  let task: string;
  let dir: string;
  const cli = (args: string[]) =>
    run(process.execPath, [join(OUT, "main.js"), "--server", r.address, ...args], {
      env: cliEnv({ TASKROUTER_FROM_SOURCE: "" }),
      encoding: "buffer",
      maxBuffer: 64 << 20,
    });

  before(async () => {
    await run(process.execPath, [join(ROOT, "scripts", "bundle-cli.js"), OUT], { cwd: ROOT });
    r = await startRouter();
    task = await r.newTask("b");
    dir = await mkdtemp(join(tmpdir(), "taskrouter-bundle-"));
  });
  after(async () => {
    await killAll();
    await r?.close();
    await rm(OUT, { recursive: true, force: true });
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("is one entry with verbs in chunks of their own, grpc-js left to node_modules", async () => {
    const files = await readdir(OUT);
    assert.ok(files.includes("main.js"), files.join(" "));
    assert.ok(files.filter((f) => f.endsWith(".js")).length > 2, "lazy verbs are chunks");
    const main = await readFile(join(OUT, "main.js"), "utf8");
    assert.doesNotMatch(main, /from "\.\.\/\.\.\/src\//, "no import of the source tree");
    const all = await Promise.all(files.map((f) => readFile(join(OUT, f), "utf8")));
    assert.ok(
      all.some((t) => t.includes('from "@grpc/grpc-js"')),
      "grpc-js imported, not inlined",
    );
  });

  it("runs client verbs: exec, cp in and out (bytes kept), cp onto an existing file", async () => {
    const { stdout } = await cli(["exec", task, "--", "sh", "-c", "echo from-the-bundle"]);
    assert.equal(stdout.toString(), "from-the-bundle\n");
    const data = randomBytes((1 << 20) + 7);
    await writeFile(join(dir, "src.bin"), data);
    await cli(["cp", "-q", join(dir, "src.bin"), `${task}:${dir}/in.bin`]);
    assert.ok((await readFile(join(dir, "in.bin"))).equals(data));
    await cli(["cp", "-q", `${task}:${dir}/in.bin`, join(dir, "out.bin")]);
    assert.ok((await readFile(join(dir, "out.bin"))).equals(data));
    await writeFile(join(dir, "in.bin"), "changed");
    await cli(["cp", "-q", `${task}:${dir}/in.bin`, join(dir, "out.bin")]);
    assert.equal(await readFile(join(dir, "out.bin"), "utf8"), "changed");
    assert.deepEqual((await readdir(dir)).sort(), ["in.bin", "out.bin", "src.bin"]);
  });

  it("serves: listens, runs an exec, exits 0 on SIGTERM", async () => {
    const data = join(dir, "serve-data");
    const serve = spawn(
      process.execPath,
      [join(OUT, "main.js"), "serve", "--auth", "none", "--runtime", "host"].concat([
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data,
      ]),
      { cwd: ROOT, env: cliEnv({ TASKROUTER_FROM_SOURCE: "" }), stdio: "pipe" },
    );
    serve.stdin.end();
    try {
      const [, address] = (await waitForOutput(
        serve,
        /listening on (127\.0\.0\.1:\d+)/,
      )) as unknown as [string, string];
      const client = new RouterClient(address);
      try {
        const t = (await new TasksClient(client).create("s")).taskId;
        const id = await client.start(t, ["sh", "-c", "echo served"], { stdout: "pipe" });
        let text = "";
        for await (const c of client.read(t, id, "stdout")) text += c.toString();
        assert.equal(text, "served\n");
        assert.equal((await client.wait(t, id)).code, 0);
      } finally {
        client.close();
      }
      const exited = once(serve, "exit");
      serve.kill("SIGTERM");
      assert.deepEqual(await exited, [0, null]);
    } finally {
      await stopCli(serve);
    }
  });
});
