import assert from "node:assert/strict";
import { getEventListeners } from "node:events";
import {
  closeSync,
  constants,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { after, before, describe, it } from "node:test";
import { InvalidArgumentError } from "../src/errors.ts";
import { FileLog } from "../src/exec/file-log.ts";
import { agentFrame } from "../src/runtime/agent/agent-conn.ts";
import { AgentStdin } from "../src/runtime/agent/agent-stdin.ts";
import {
  createOrOpenSync,
  ExecDirFileError,
  openRegularSync,
  readBounded,
  socketPath,
} from "../src/runtime/agent/exec-dir-files.ts";
import { FileOutput } from "../src/runtime/agent/file-output.ts";
import { ExecJournal, JOURNAL } from "../src/runtime/agent/journal.ts";
import { RingLog } from "../src/tasks/entrypoint-log.ts";
import { decodeExecRecord } from "../src/tasks/exec-record.ts";
import { MARKER, PLANTS, plant } from "./helpers/hostile-dir.ts";

/**
 * The router's side of a hostile exec directory, unit by unit on real files
 * (src/runtime/agent/exec-dir-files.ts and its users), and the output logs'
 * waits (no registration left behind per wait).
 */
describe("opening files of an exec directory", () => {
  let dir = "";
  let host = "";
  const intact = () => readFileSync(host, "utf8") === MARKER;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "execdir-"));
    host = join(mkdtempSync(join(tmpdir(), "execdir-host-")), "host-file");
    writeFileSync(host, MARKER);
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
    rmSync(join(host, ".."), { recursive: true, force: true });
  });

  it("opens regular files; refuses symlinks, FIFOs, device nodes (ExecDirFileError)", () => {
    writeFileSync(join(dir, "plain"), "abc");
    closeSync(openRegularSync(join(dir, "plain"), constants.O_RDONLY));
    for (const kind of PLANTS) {
      plant(join(dir, "x"), kind, host);
      assert.throws(() => openRegularSync(join(dir, "x"), constants.O_RDWR), ExecDirFileError);
      assert.throws(() => createOrOpenSync(join(dir, "x"), constants.O_WRONLY), ExecDirFileError);
      assert.throws(() => readBounded(join(dir, "x"), 100), ExecDirFileError);
    }
    assert.ok(intact());
  });

  it("creates a missing file, opens an existing one; reads at most the bound", () => {
    const p = join(dir, "made");
    closeSync(createOrOpenSync(p, constants.O_WRONLY));
    closeSync(createOrOpenSync(p, constants.O_WRONLY));
    assert.equal(readBounded(join(dir, "absent"), 10), undefined);
    writeFileSync(p, "0123456789");
    assert.equal(readBounded(p, 10)?.toString(), "0123456789");
    assert.throws(() => readBounded(p, 9), ExecDirFileError);
    truncateSync(p, 1 << 30); // sparse: never read whole
    assert.throws(() => readBounded(p, 1 << 20), ExecDirFileError);
  });

  it("connects only to a socket: a symlink to one is refused", async () => {
    const sock = join(dir, "real.sock");
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    try {
      closeSync(socketPath(sock));
      symlinkSync(sock, join(dir, "agent.sock"));
      assert.throws(() => socketPath(join(dir, "agent.sock")), ExecDirFileError);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("a linear KEY.in planted as anything but a file: the write fails, nothing is written", async () => {
    for (const kind of PLANTS) {
      const path = join(dir, "k.in");
      plant(path, kind, host);
      const sent: string[][] = [];
      const stdin = new AgentStdin(
        path,
        (f) => sent.push(f),
        "k",
        { written: 0, closed: false },
        () => {},
      );
      const failed = new Promise<Error>((resolve) => stdin.once("error", resolve));
      stdin.write(Buffer.from("client bytes"));
      assert.ok((await failed) instanceof ExecDirFileError, kind);
      assert.deepEqual(sent, [], "nothing announced to the agent");
      assert.ok(intact());
    }
  });

  it("the journal: never read, appended or compacted through a symlink", () => {
    const k = (n: number) => n.toString(16).padStart(32, "0");
    const d = mkdtempSync(join(dir, "j-"));
    symlinkSync(host, join(d, `${JOURNAL}.tmp`));
    const j = new ExecJournal(d);
    j.load();
    j.add(k(1), "{}");
    j.close();
    writeFileSync(join(d, JOURNAL), `+${k(2)} {}\n`);
    new ExecJournal(d).load(); // compacts into the tmp name: a fresh file
    assert.ok(intact());
    for (const kind of PLANTS) {
      plant(join(d, JOURNAL), kind, host);
      assert.throws(() => new ExecJournal(d).load(), ExecDirFileError);
      const appender = new ExecJournal(d);
      appender.add(k(3), "{}"); // replaces the planted name with the live entries
      appender.close();
      assert.deepEqual([...new ExecJournal(d).load().keys()], [k(3)]);
      assert.ok(intact());
    }
  });

  it("the journal: a directory planted at its name or its tmp name is moved aside, never walked", () => {
    const k = (n: number) => n.toString(16).padStart(32, "0");
    const d = mkdtempSync(join(dir, "jd-"));
    const j = new ExecJournal(d);
    j.load();
    j.add(k(1), "{}");
    j.close();
    // A directory at the journal's name and one at its tmp name, each with a link inside.
    for (const name of [JOURNAL, `${JOURNAL}.tmp`]) {
      rmSync(join(d, name), { force: true });
      mkdirSync(join(d, name));
      symlinkSync(host, join(d, name, "x"));
    }
    assert.throws(() => new ExecJournal(d).load(), ExecDirFileError);
    const appender = new ExecJournal(d);
    appender.add(k(2), "{}"); // compacts past both directories
    appender.remove(k(2));
    appender.add(k(3), "{}");
    appender.close();
    assert.deepEqual([...new ExecJournal(d).load().keys()], [k(3)]);
    const aside = readdirSync(d).filter((n) => n.includes(".planted-"));
    assert.equal(aside.length, 2, readdirSync(d).join(" "));
    assert.ok(intact());
  });

  it("exec records: any JSON that is not a record object is refused, never thrown on", () => {
    for (const text of ["null", "[]", '"x"', "1", "true", '{"v":1}', '{"v":1,"request":null}']) {
      assert.equal(decodeExecRecord(text), undefined, text);
    }
  });

  it("a request field with a NUL byte is refused before anything is sent", () => {
    assert.throws(() => agentFrame(["exec", "k", "a\0b"]), InvalidArgumentError);
    assert.equal(agentFrame(["ping", "1"]).length, 4 + "ping\0".length + "1\0".length);
  });
});

describe("waiting for output leaves nothing behind per wait", () => {
  let dir = "";
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "execdir-log-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /**
   * The signals Node keeps as derived from `signal` (AbortSignal.any; Node's
   * internal `kDependantSignals`, 0 when it has none or another Node keeps them elsewhere).
   */
  function dependants(signal: AbortSignal): number {
    const sym = Object.getOwnPropertySymbols(signal).find(
      (x) => x.description === "kDependantSignals",
    );
    const set = sym ? (signal as unknown as Record<symbol, { size?: number }>)[sym] : undefined;
    return set?.size ?? 0;
  }

  /** Dependants of every AbortSignal (or AbortController's) that `obj` holds in its own fields. */
  function heldDependants(obj: object): number {
    let n = 0;
    for (const v of Object.values(obj)) {
      if (v instanceof AbortController) n += dependants(v.signal);
      else if (v instanceof AbortSignal) n += dependants(v);
    }
    return n;
  }

  /** Starts `n` reads of `log` that wait for more, then cancels them all. */
  async function cancelledReads(
    log: { read(o: number, s?: AbortSignal): AsyncGenerator<unknown>; waiting: number },
    at: number,
    n: number,
  ): Promise<void> {
    for (let i = 0; i < n; i++) {
      const ac = new AbortController();
      const next = log.read(at, ac.signal).next();
      ac.abort();
      await assert.rejects(next, { kind: "Cancelled" });
    }
  }

  it("FileLog: 10,000 cancelled reads and a chatty stream keep at most the live reader", async () => {
    const path = join(dir, "k.out");
    writeFileSync(path, "");
    const out = new FileOutput(path, join(dir, "k.kept"), 0, () => {});
    const log = new FileLog(out);
    await cancelledReads(log, 0, 10_000);
    assert.equal(heldDependants(log), 0);
    assert.equal(log.waiting, 0);
    // One live reader of a stream that grows 2,000 times, a byte at a time.
    const ac = new AbortController();
    const reader = (async () => {
      let got = 0;
      for await (const c of log.read(0, ac.signal)) got += c.length;
      return got;
    })();
    for (let i = 1; i <= 2000; i++) {
      writeFileSync(path, "x", { flag: "a" });
      out.grow(i);
      await new Promise((r) => setImmediate(r));
      assert.ok(log.waiting <= 1, `${log.waiting} waits registered`);
      assert.ok(getEventListeners(ac.signal, "abort").length <= 1);
    }
    // AbortSignal.any per wait would have made thousands of dependants of a signal of the log's.
    assert.ok(heldDependants(log) <= 1, `${heldDependants(log)} dependants`);
    out.end(2000);
    assert.equal(await reader, 2000);
    assert.equal(log.waiting, 0);
  });

  it("FileLog: dispose wakes a waiting reader with NotFound", async () => {
    const path = join(dir, "d.out");
    writeFileSync(path, "");
    const log = new FileLog(new FileOutput(path, join(dir, "d.kept"), 0, () => {}));
    const next = log.read(0).next();
    await new Promise((r) => setImmediate(r));
    assert.equal(log.waiting, 1);
    await log.dispose();
    await assert.rejects(next, { kind: "NotFound" });
    assert.equal(log.waiting, 0);
  });

  it("an entrypoint's RingLog: 10,000 cancelled reads leave no wait registered", async () => {
    const pipe = new PassThrough();
    const log = new RingLog(pipe, new Promise(() => {}), 1024, 10);
    await cancelledReads(log, 0, 10_000);
    assert.equal(heldDependants(log), 0);
    assert.equal(log.waiting, 0);
    pipe.destroy();
    await log.dispose();
  });
});

if (!PLANTS.includes("device")) console.log("# exec-dir-files: device nodes skipped (needs root)");
