import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import type { RpcError } from "../src/client/errors.ts";
import { SecretsClient } from "../src/client/secrets.ts";
import { TaskRouterError } from "../src/errors.ts";
import { PTYInfoSchema } from "../src/gen/modal_proto/api_pb.ts";
import {
  TaskExecStartRequestSchema,
  TaskExecStdoutConfig,
} from "../src/gen/modal_proto/task_command_router_pb.ts";
import { parseEnvFile } from "../src/secrets/env-file.ts";
import { SecretStore } from "../src/secrets/secret-store.ts";
import { collect, startRouter, type TestRouter } from "./helpers/router.ts";

const VALUE = `tr-value-${randomBytes(8).toString("hex")}`;

/** Asserts that `p` rejects with a domain error of `kind` whose message never holds VALUE. */
async function rejectsKind(p: Promise<unknown>, kind: string): Promise<TaskRouterError> {
  const err = await p.then(
    () => assert.fail(`expected ${kind}`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof TaskRouterError, String(err));
  assert.equal(err.kind, kind, err.message);
  assert.ok(!err.message.includes(VALUE), "an error message carries a secret value");
  return err;
}

describe("secret store (data dir)", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskrouter-secrets-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("keeps each secret in a 0600 file in a 0700 dir, atomically, and reloads it", async () => {
    const sdir = join(dir, "store1");
    await mkdir(sdir, { mode: 0o755 });
    await chmod(sdir, 0o755);
    const store = await SecretStore.open(sdir);
    assert.equal((await stat(sdir)).mode & 0o777, 0o700);
    const res = await store.create("db.prod", new Map([["PASSWORD", VALUE]]));
    assert.equal(res.changed, true);
    assert.deepEqual(res.info.keys, ["PASSWORD"]);
    assert.deepEqual(await readdir(sdir), ["db.prod.json"]); // no temp file left
    const file = join(sdir, "db.prod.json");
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.ok((await readFile(file, "utf8")).includes(VALUE));
    const again = await SecretStore.open(sdir);
    assert.deepEqual(again.resolve(["db.prod"]), { PASSWORD: VALUE });
    assert.deepEqual(
      again.list().map((s) => s.name),
      ["db.prod"],
    );
  });

  it("skips a corrupt file with a warning that names the file but quotes nothing of it", async () => {
    const sdir = join(dir, "store2");
    await mkdir(sdir);
    await writeFile(join(sdir, "broken.json"), `{"name":"broken","data":{"K":"${VALUE}"`);
    await writeFile(join(sdir, ".tmp-0123"), VALUE);
    const warnings: string[] = [];
    const store = await SecretStore.open(sdir, (m) => warnings.push(m));
    assert.equal(store.list().length, 0);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0] ?? "", /broken\.json/);
    assert.ok(!warnings.join("\n").includes(VALUE));
    assert.deepEqual(await readdir(sdir), ["broken.json"]); // the stale temp file is gone
  });

  it("creates idempotently, refuses other data without overwrite, replaces with it", async () => {
    const store = await SecretStore.open(join(dir, "store3"));
    const first = await store.create("s", new Map([["A", "1"]]));
    assert.equal((await store.create("s", new Map([["A", "1"]]))).changed, false);
    await rejectsKind(store.create("s", new Map([["A", VALUE]])), "AlreadyExists");
    assert.deepEqual(store.resolve(["s"]), { A: "1" });
    const replaced = await store.create("s", new Map([["B", VALUE]]), { overwrite: true });
    assert.equal(replaced.changed, true);
    assert.equal(replaced.info.createdAt, first.info.createdAt);
    assert.deepEqual(store.resolve(["s"]), { B: VALUE });
    assert.equal(await store.delete("s"), true);
    assert.equal(await store.delete("s"), false);
    assert.deepEqual(await readdir(join(dir, "store3")), []);
  });

  it("rejects bad names, keys and values, naming keys but never values, writing nothing", async () => {
    const sdir = join(dir, "store4");
    const store = await SecretStore.open(sdir);
    for (const name of ["", ".hidden", "a/b", "x".repeat(129), "..", "a b"]) {
      await rejectsKind(store.create(name, new Map([["K", VALUE]])), "InvalidArgument");
    }
    const badKey = await rejectsKind(
      store.create("s", new Map([["1K", VALUE]])),
      "InvalidArgument",
    );
    assert.match(badKey.message, /1K/);
    await rejectsKind(store.create("s", new Map([["A-B", VALUE]])), "InvalidArgument");
    const nul = await rejectsKind(
      store.create("s", new Map([["K", `${VALUE}\0x`]])),
      "InvalidArgument",
    );
    assert.match(nul.message, /K.*NUL/);
    const big = `${VALUE}${"x".repeat(128 * 1024)}`;
    await rejectsKind(store.create("s", new Map([["K", big]])), "InvalidArgument");
    assert.deepEqual(await readdir(sdir), []);
  });

  it("resolves ids in order (later ids win) and rejects unknown and empty ids", async () => {
    const store = await SecretStore.open(join(dir, "store5"));
    await store.create(
      "one",
      new Map([
        ["A", "1"],
        ["B", "1"],
      ]),
    );
    await store.create(
      "two",
      new Map([
        ["B", "2"],
        ["C", "2"],
      ]),
    );
    assert.deepEqual(store.resolve(["one", "two"]), { A: "1", B: "2", C: "2" });
    assert.deepEqual(store.resolve(["two", "one"]), { A: "1", B: "1", C: "2" });
    assert.throws(() => store.resolve(["one", "nope"]), { kind: "NotFound", message: /"nope"/ });
    assert.throws(() => store.resolve([""]), { kind: "InvalidArgument" });
  });
});

describe("env files", () => {
  it("parses KEY=VALUE lines, comments, blanks, export, quotes, CRLF", () => {
    const text = [
      "# a comment",
      "",
      "A=plain value # not a comment",
      "  export B = 'single # quoted'",
      'C="double"\r',
      "D=",
      "E=a=b",
      'F="unbalanced',
      "   # indented comment",
    ].join("\n");
    assert.deepEqual(
      parseEnvFile(text, "f").map((e) => [e.key, e.value, e.line]),
      [
        ["A", "plain value # not a comment", 3],
        ["B", " 'single # quoted'", 4],
        ["C", "double", 5],
        ["D", "", 6],
        ["E", "a=b", 7],
        ["F", '"unbalanced', 8],
      ],
    );
    assert.deepEqual(
      parseEnvFile("B='quoted'", "f").map((e) => e.value),
      ["quoted"],
    );
  });

  it("reports bad lines by file and line number, never by their text", () => {
    assert.throws(
      () => parseEnvFile(`A=1\n${VALUE}\n`, "f.env"),
      (err: Error) => {
        assert.match(err.message, /^f\.env:2: expected KEY=VALUE$/);
        return true;
      },
    );
    assert.throws(
      () => parseEnvFile(`1${VALUE}=x`, "f.env"),
      (err: Error) => {
        assert.match(err.message, /^f\.env:1: /);
        assert.ok(!err.message.includes(VALUE));
        return true;
      },
    );
  });
});

describe("secrets through the API and secret_ids", () => {
  let r: TestRouter;
  let secrets: SecretsClient;
  let task: string;
  before(async () => {
    r = await startRouter();
    secrets = new SecretsClient(r.client);
    task = await r.newTask();
  });
  after(() => r.close());

  async function run(argv: string[], secretIds: string[]): Promise<string> {
    const id = await r.client.start(task, argv, { stdout: "pipe", secretIds });
    assert.deepEqual(await r.client.wait(task, id), { code: 0 });
    return (await collect(r.client.read(task, id, "stdout"))).toString();
  }

  it("creates, lists (names and keys, no values) and deletes; the file is 0600", async () => {
    const res = await secrets.create("api", { TOKEN: VALUE, USER_NAME: "bob" });
    assert.equal(res.changed, true);
    assert.deepEqual(res.secret.keys, ["TOKEN", "USER_NAME"]);
    assert.equal((await secrets.create("api", { TOKEN: VALUE, USER_NAME: "bob" })).changed, false);
    await rejectsKind(secrets.create("api", { TOKEN: "other" }), "AlreadyExists");
    const list = await secrets.list();
    assert.deepEqual(
      list.map((s) => [s.name, s.keys]),
      [["api", ["TOKEN", "USER_NAME"]]],
    );
    assert.ok(
      !JSON.stringify(list, (_k, v) => (typeof v === "bigint" ? String(v) : v)).includes(VALUE),
    );
    assert.equal((await stat(join(r.dataDir, "secrets", "api.json"))).mode & 0o777, 0o600);
    assert.equal((await stat(join(r.dataDir, "secrets"))).mode & 0o777, 0o700);
    await secrets.create("tmp", { X: "1" });
    assert.equal(await secrets.delete("tmp"), true);
    assert.equal(await secrets.delete("tmp"), false);
    const bad = await rejectsKind(secrets.create("bad", { "NOT-A-KEY": VALUE }), "InvalidArgument");
    assert.equal((bad as RpcError).code, status.INVALID_ARGUMENT);
    await rejectsKind(secrets.create("bad/name", { K: VALUE }), "InvalidArgument");
  });

  it("injects a secret's pairs as env vars of the command", async () => {
    assert.equal(
      await run(["sh", "-c", 'printf "%s|%s" "$TOKEN" "$USER_NAME"'], ["api"]),
      `${VALUE}|bob`,
    );
  });

  it("later secret ids win over earlier ones; secrets override the runtime's base env", async () => {
    await secrets.create("first", { SHARED: "first", LANG: "secret-lang" });
    await secrets.create("second", { SHARED: "second" });
    assert.equal(await run(["sh", "-c", 'printf %s "$SHARED"'], ["first", "second"]), "second");
    assert.equal(await run(["sh", "-c", 'printf %s "$SHARED"'], ["second", "first"]), "first");
    assert.equal(await run(["sh", "-c", 'printf %s "$LANG"'], ["first"]), "secret-lang");
    assert.equal(await run(["sh", "-c", 'printf %s "$LANG"'], []), "C.UTF-8");
  });

  it("PTY request vars (TERM) win over a secret", async () => {
    await secrets.create("term", { TERM: "from-secret", COLORTERM: "from-secret" });
    const req = create(TaskExecStartRequestSchema, {
      taskId: task,
      execId: `pty-${randomBytes(4).toString("hex")}`,
      commandArgs: ["sh", "-c", 'printf "%s|%s" "$TERM" "$COLORTERM"'],
      stdoutConfig: TaskExecStdoutConfig.PIPE,
      secretIds: ["term"],
      ptyInfo: create(PTYInfoSchema, {
        enabled: true,
        envTerm: "xterm-req",
        envColorterm: "truecolor",
      }),
    });
    await r.client.unary("taskExecStart", req);
    await r.client.wait(task, req.execId);
    const out = (await collect(r.client.read(task, req.execId, "stdout"))).toString();
    assert.equal(out.trim(), "xterm-req|truecolor");
  });

  it("an unknown secret id gets NOT_FOUND and starts nothing", async () => {
    const marker = join(r.dataDir, "should-not-exist");
    const execId = "unknown-secret";
    const argv = ["sh", "-c", `touch ${marker}`];
    const err = await rejectsKind(
      r.client.start(task, argv, { execId, secretIds: ["api", "nope"] }),
      "NotFound",
    );
    assert.equal((err as RpcError).code, status.NOT_FOUND);
    assert.match(err.message, /nope/);
    await rejectsKind(r.client.poll(task, execId), "NotFound");
    await assert.rejects(stat(marker), { code: "ENOENT" });
    // Nothing was started, so the same exec id is free once the secret exists.
    await secrets.create("nope", { K: "v" });
    await r.client.start(task, argv, { execId, secretIds: ["api", "nope"] });
    assert.deepEqual(await r.client.wait(task, execId), { code: 0 });
    await stat(marker);
  });

  it("an exec id retried with the same secret ids is OK; with other ids ALREADY_EXISTS", async () => {
    const execId = "idem";
    const count = join(r.dataDir, "idem.count");
    const argv = ["sh", "-c", `echo run >> ${count}`];
    await r.client.start(task, argv, { execId, secretIds: ["api"] });
    await r.client.wait(task, execId);
    await r.client.start(task, argv, { execId, secretIds: ["api"] });
    await r.client.wait(task, execId);
    await rejectsKind(
      r.client.start(task, argv, { execId, secretIds: ["first"] }),
      "AlreadyExists",
    );
    assert.equal(await readFile(count, "utf8"), "run\n");
  });

  it("deleting a secret leaves started execs alone; later starts get NOT_FOUND", async () => {
    await secrets.create("gone", { G: VALUE });
    const id = await r.client.start(task, ["sh", "-c", 'read x; printf %s "$G"'], {
      stdout: "pipe",
      secretIds: ["gone"],
    });
    assert.equal(await secrets.delete("gone"), true);
    await r.client.writeStdin(task, id, 0, Buffer.from("go\n"), true);
    assert.deepEqual(await r.client.wait(task, id), { code: 0 });
    assert.equal((await collect(r.client.read(task, id, "stdout"))).toString(), VALUE);
    await rejectsKind(r.client.start(task, ["true"], { secretIds: ["gone"] }), "NotFound");
  });
});
