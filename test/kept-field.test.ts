import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { FailedPreconditionError, UnavailableError } from "../src/errors.ts";
import { keptField } from "../src/runtime/agent/file-output.ts";

/**
 * KEY.kept (native/task-agent.c, flag `r`) is replaced whole (KEY.kept.new
 * renamed over it) as fast as the agent frees output: a reader gets a whole
 * value every time. A writer rewriting it in place (an older agent, or a
 * task's own process) can tear reads: the reader then gets a whole value or
 * UNAVAILABLE, never a torn value (CI once saw INTERNAL there).
 */
const line = (out: number, err: number) =>
  `${String(out).padStart(20, "0")} ${String(err).padStart(20, "0")}\n`;

/**
 * Writes growing values to argv[1] in a tight loop until argv[2] exists:
 * in place (argv[3] "inplace") or, as the agent does, whole to argv[1].new
 * and renamed over argv[1].
 */
const WRITER = `const fs = require("node:fs"); const [f, stop, how] = process.argv.slice(1);
const pad = (n) => String(n).padStart(20, "0");
const fd = how === "inplace" ? fs.openSync(f, "r+") : -1;
console.log("ready");
for (let n = 1; ; n++) {
  if (n % 256 === 0 && fs.existsSync(stop)) break;
  const text = pad(n * 4096) + " " + pad(n * 8192) + "\\n";
  if (fd >= 0) fs.writeSync(fd, text, 0);
  else { fs.writeFileSync(f + ".new", text); fs.renameSync(f + ".new", f); }
}`;

/** Runs WRITER on `path` while `reads` runs; stops and reaps it, also on failure. */
async function whileWriting(path: string, how: "rename" | "inplace", reads: () => Promise<void>) {
  const stop = `${path}.stop`;
  writeFileSync(path, line(0, 0));
  const writer = spawn(process.execPath, ["-e", WRITER, path, stop, how], { stdio: "pipe" });
  const exited = new Promise((resolve) => writer.once("exit", resolve));
  try {
    await new Promise<void>((resolve) => writer.stdout.once("data", () => resolve()));
    await reads();
  } finally {
    writeFileSync(stop, "");
    await exited;
    assert.ok(existsSync(stop));
  }
}

describe("keptField", () => {
  // Made when the suite runs (not when a --test-name-pattern run only loads it).
  let dir = "";
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "taskrouter-kept-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("reads each field, and 0 without a file or for what is not a file", () => {
    const path = join(dir, "a.kept");
    writeFileSync(path, line(4096, 12288));
    assert.equal(keptField(path, 0), 4096);
    assert.equal(keptField(path, 1), 12288);
    assert.equal(keptField(join(dir, "absent.kept"), 0), 0);
    assert.equal(keptField(dir, 0), 0, "a directory");
    writeFileSync(join(dir, "empty.kept"), "");
    assert.equal(keptField(join(dir, "empty.kept"), 1), 0);
  });

  it("refuses a stable line that is not the agent's with FAILED_PRECONDITION, not a retry", () => {
    const path = join(dir, "bad.kept");
    writeFileSync(path, "not a kept line\n");
    assert.throws(() => keptField(path, 0), FailedPreconditionError);
  });

  it("gets a whole, growing value every time while the file is replaced nonstop, as the agent does", async () => {
    const path = join(dir, "b.kept");
    await whileWriting(path, "rename", async () => {
      let last = 0;
      // 2000 reads at least, and on until the writer was seen (a hang guard of 60 s).
      const guard = Date.now() + 60_000;
      for (let i = 0; i < 2000 || (last === 0 && Date.now() < guard); i++) {
        const out = keptField(path, 0);
        const err = keptField(path, 1);
        assert.equal(out % 4096, 0, `a torn value: ${out}`);
        assert.equal(err % 8192, 0, `a torn value: ${err}`);
        assert.ok(out >= last, `went back: ${out} < ${last}`);
        last = out;
        if (i % 100 === 0) await sleep(0);
      }
      assert.ok(last > 0, "the writer was seen writing");
    });
  });

  it("gets a whole value or UNAVAILABLE, never a torn value, while the line is rewritten in place", async (t) => {
    const path = join(dir, "c.kept");
    await whileWriting(path, "inplace", async () => {
      let whole = 0;
      let unavailable = 0;
      // 2000 reads at least, and on until the writer was seen (a hang guard of 60 s).
      const guard = Date.now() + 60_000;
      for (let i = 0; i < 2000 || (whole + unavailable === 0 && Date.now() < guard); i++) {
        let out: number;
        try {
          out = keptField(path, 0);
        } catch (e) {
          assert.ok(e instanceof UnavailableError, `not UNAVAILABLE: ${String(e)}`);
          unavailable++;
          continue;
        }
        assert.equal(out % 4096, 0, `a torn value: ${out}`);
        if (out > 0) whole++;
        if (i % 100 === 0) await sleep(0);
      }
      assert.ok(whole + unavailable > 0, "the writer was seen writing");
      // How often the reads agreed depends on the machine's load: not asserted.
      t.diagnostic(`${whole} whole values above 0, ${unavailable} UNAVAILABLE`);
    });
  });
});
