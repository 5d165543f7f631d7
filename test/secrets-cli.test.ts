import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { status as grpcStatus } from "@grpc/grpc-js";
import { RouterClient } from "../src/client/client.ts";
import { SecretsClient } from "../src/client/secrets.ts";
import { TaskRouterError } from "../src/errors.ts";
import { systemArgMax } from "../src/exec/exec-request.ts";
import { grpcFrame, rawCall } from "./helpers/raw-h2.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "bin", "taskrouter.js");
/** Every secret value of this file starts with this; it must appear in no log or CLI output. */
const MARK = `trsv${randomBytes(8).toString("hex")}`;
const V1 = `${MARK}-literal`;
const V2 = `${MARK}-envfile`;
const V3 = `${MARK}-stdin`;

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `node bin/taskrouter.js ARGS` to its end, with optional stdin. */
async function runNode(args: string[], input?: string): Promise<CliResult> {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, stdio: "pipe" });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (c: Buffer) => {
    stdout += c.toString();
  });
  child.stderr.on("data", (c: Buffer) => {
    stderr += c.toString();
  });
  child.stdin.end(input ?? "");
  const [code] = (await once(child, "close")) as [number | null];
  return { code, stdout, stderr };
}

describe("secrets: CLI, and values absent from every log and output (router as a subprocess)", () => {
  let dir: string;
  let server: ChildProcess | undefined;
  let serverLog = "";
  let address = "";
  let task = "";
  /** stdout and stderr of every CLI run and every error message seen by a client. */
  const outputs: string[] = [];

  async function cli(args: string[], input?: string): Promise<CliResult> {
    const res = await runNode(["--server", address, ...args], input);
    outputs.push(res.stdout, res.stderr);
    return res;
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskrouter-secrets-cli-"));
    // Another issue adds authentication; on loopback it can be turned off.
    const help = await runNode(["serve", "--help"]);
    const auth = help.stdout.includes("--auth") ? ["--auth", "none"] : [];
    const args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", join(dir, "data")];
    args.push("--runtime", "host"); // serve defaults to runc containers as root
    server = spawn(process.execPath, [BIN, ...args, "--log-level", "trace", ...auth], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const s = server;
    s.stderr?.on("data", (c: Buffer) => {
      serverLog += c.toString();
    });
    address = await new Promise<string>((resolve, reject) => {
      s.once("exit", (code) => reject(new Error(`serve exited (${code}): ${serverLog}`)));
      s.stdout?.on("data", (c: Buffer) => {
        serverLog += c.toString();
        const m = /listening on (\S+)/.exec(serverLog);
        if (m?.[1]) resolve(m[1]);
      });
    });
    const created = await cli(["task", "create"]);
    assert.equal(created.code, 0, created.stderr);
    task = created.stdout.trim();
  });

  after(async () => {
    if (server?.pid !== undefined && server.exitCode === null && server.signalCode === null) {
      server.kill("SIGKILL");
      await once(server, "exit");
    }
    await rm(dir, { recursive: true, force: true });
  });

  it("secret create (literal, env file, stdin), ls (names only), rm", async () => {
    let r = await cli(["secret", "create", "lit", "--from-literal", `TOKEN=${V1}`]);
    assert.deepEqual([r.code, r.stdout, r.stderr], [0, "lit\n", ""]);
    const envFile = join(dir, "app.env");
    await writeFile(envFile, `# app\nexport DB_PASS="${V2}"\n\nDB_USER=app\n`);
    r = await cli(["secret", "create", "file", "--from-env-file", envFile]);
    assert.deepEqual([r.code, r.stdout], [0, "file\n"], r.stderr);
    r = await cli(["secret", "create", "piped", "--from-env-file", "-"], `PIPED=${V3}\n`);
    assert.deepEqual([r.code, r.stdout], [0, "piped\n"], r.stderr);
    const file = join(dir, "data", "secrets", "file.json");
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal((await stat(join(dir, "data", "secrets"))).mode & 0o777, 0o700);

    r = await cli(["secret", "ls"]);
    assert.deepEqual([r.code, r.stdout], [0, "file\nlit\npiped\n"]);
    r = await cli(["secret", "ls", "--keys"]);
    assert.deepEqual([r.code, r.stdout], [0, "file\tDB_PASS,DB_USER\nlit\tTOKEN\npiped\tPIPED\n"]);

    // Same data again: OK. Other data: refused unless --overwrite.
    r = await cli(["secret", "create", "lit", "--from-literal", `TOKEN=${V1}`]);
    assert.equal(r.code, 0, r.stderr);
    r = await cli(["secret", "create", "lit", "--from-literal", `TOKEN=${V1}x`]);
    assert.equal(r.code, 125);
    assert.match(r.stderr, /AlreadyExists: secret lit already exists/);
    r = await cli(["secret", "create", "tmp", "--from-literal", `A=${V1}`]);
    r = await cli(["secret", "create", "tmp", "--overwrite", "--from-literal", `B=${V1}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await cli(["secret", "ls", "--keys"])).stdout.includes("tmp\tB\n"), true);

    r = await cli(["secret", "rm", "tmp", "missing"]);
    assert.deepEqual([r.code, r.stdout], [1, "tmp\n"]);
    assert.match(r.stderr, /secret missing not found/);
    await assert.rejects(stat(join(dir, "data", "secrets", "tmp.json")), { code: "ENOENT" });
  });

  it("bad CLI input is refused without echoing values", async () => {
    const cases: [string[], RegExp][] = [
      [["secret", "create", "x", "--from-literal", V1], /--from-literal takes KEY=VALUE/],
      [["secret", "create", "x", "--from-literal", `1BAD=${V1}`], /InvalidArgument: .*"1BAD"/],
      [["secret", "create", "x/y", "--from-literal", `K=${V1}`], /InvalidArgument: secret name/],
      [["secret", "create", "x"], /needs --from-literal/],
      [["secret", "create", "x", "--from-literal", `K=${V1}`, "--from-literal", "K=2"], /twice/],
    ];
    for (const [args, err] of cases) {
      const r = await cli(args);
      assert.equal(r.code, 125, args.join(" "));
      assert.match(r.stderr, err);
    }
    const bad = join(dir, "bad.env");
    await writeFile(bad, `OK=1\n${V2}\n`);
    const r = await cli(["secret", "create", "x", "--from-env-file", bad]);
    assert.equal(r.code, 125);
    assert.match(r.stderr, /bad\.env:2: expected KEY=VALUE/);
  });

  it("exec --secret gives the command its env; -e wins; an unknown secret runs nothing", async () => {
    const reached = join(dir, "reached");
    let r = await cli([
      "exec",
      "--secret",
      "lit",
      "--secret",
      "file",
      task,
      "--",
      "sh",
      "-c",
      `printf '%s|%s|%s' "$TOKEN" "$DB_PASS" "$DB_USER" > ${reached}`,
    ]);
    assert.deepEqual([r.code, r.stdout, r.stderr], [0, "", ""]);
    assert.equal(await readFile(reached, "utf8"), `${V1}|${V2}|app`);

    r = await cli([
      "exec",
      "--secret",
      "file",
      "-e",
      "DB_USER=cli",
      task,
      "--",
      "sh",
      "-c",
      'echo "$DB_USER"',
    ]);
    assert.deepEqual([r.code, r.stdout], [0, "cli\n"], r.stderr);

    const ran = join(dir, "ran");
    r = await cli(["exec", "--secret", "lit", "--secret", "nope", task, "--", "touch", ran]);
    assert.equal(r.code, 125);
    assert.match(r.stderr, /NotFound: secret "nope" not found/);
    await assert.rejects(stat(ran), { code: "ENOENT" });
  });

  it("error paths through the API never carry values", async () => {
    const client = new RouterClient(address);
    const secrets = new SecretsClient(client);
    const errors: string[] = [];
    const expectKind = async (p: Promise<unknown>, kind: string) => {
      const err = await p.then(
        () => assert.fail(`expected ${kind} (case ${errors.length + 1})`),
        (e: unknown) => e,
      );
      assert.ok(err instanceof TaskRouterError, String(err));
      assert.equal(err.kind, kind, err.message);
      errors.push(err.message);
    };
    try {
      // Bytes that are no CreateSecretRequest (a value among them): refused, and the log's
      // "malformed request" line (--log-level trace) must not carry them either.
      const raw = await rawCall(
        address,
        "/taskrouter.v1.Secrets/CreateSecret",
        {},
        grpcFrame(Buffer.from(`${V1}-raw`)),
      );
      assert.equal(raw.code, grpcStatus.INVALID_ARGUMENT, raw.message);
      errors.push(raw.message);
      await expectKind(secrets.create("nul", { K: `${V1}\0` }), "InvalidArgument");
      await expectKind(secrets.create("big", { K: V1.repeat(10_000) }), "InvalidArgument");
      await expectKind(secrets.create("lit", { TOKEN: V3 }), "AlreadyExists");
      // Environment past ARG_MAX: secrets near the size limit, together too big to exec.
      const pad = "x".repeat(130_000 - MARK.length);
      const pairs = (s: number) =>
        Object.fromEntries([1, 2, 3, 4, 5, 6, 7].map((i) => [`S${s}_K${i}`, MARK + pad]));
      const n = Math.ceil(systemArgMax() / 900_000) + 1;
      const ids: string[] = [];
      for (let i = 0; i < n; i++) {
        await secrets.create(`huge${i}`, pairs(i));
        ids.push(`huge${i}`);
      }
      await expectKind(client.start(task, ["true"], { secretIds: ids }), "InvalidArgument");
      await expectKind(client.start(task, [], { secretIds: ["lit"] }), "InvalidArgument");
      await expectKind(client.start(task, ["true"], { secretIds: ["lit", ""] }), "InvalidArgument");
      await expectKind(client.start(task, ["true"], { secretIds: ["gone"] }), "NotFound");
      for (const id of ids) await secrets.delete(id);
    } finally {
      client.close();
    }
    outputs.push(...errors);
    for (const m of errors) assert.ok(!m.includes(MARK), `a value in an error: ${m.slice(0, 200)}`);
  });

  it("no secret value appears in the server's log or any CLI output", async () => {
    const r = await cli(["secret", "ls", "--keys"]);
    assert.equal(r.code, 0);
    const s = server as ChildProcess;
    s.kill("SIGTERM");
    await once(s, "exit");
    // The log did record request problems (else the check below would look at nothing).
    assert.match(serverLog, /malformed request/);
    assert.ok(outputs.join("").length > 0);
    assert.ok(!serverLog.includes(MARK), "a secret value is in the server's log");
    for (const o of outputs) assert.ok(!o.includes(MARK), `a secret value in CLI output: ${o}`);
  });
});
