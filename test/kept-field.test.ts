import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { keptField } from "../src/runtime/agent/file-output.ts";

/**
 * KEY.kept (native/task-agent.c, flag `r`) is rewritten in place, as fast as
 * the agent frees output: a reader must still get a value that two
 * back-to-back reads agreed on (CI once saw INTERNAL where the reads went
 * through the thread pool and never agreed while a stream ran).
 */
const line = (out: number, err: number) =>
  `${String(out).padStart(20, "0")} ${String(err).padStart(20, "0")}\n`;

/** Rewrites argv[1] in place with growing values in a tight loop until argv[2] exists. */
const WRITER = `const fs = require("node:fs"); const [f, stop] = process.argv.slice(1);
const fd = fs.openSync(f, "r+"); const pad = (n) => String(n).padStart(20, "0");
console.log("ready");
for (let n = 1; ; n++) {
  if (n % 256 === 0 && fs.existsSync(stop)) break;
  fs.writeSync(fd, pad(n * 4096) + " " + pad(n * 8192) + "\\n", 0);
}`;

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

  it("gets a whole, growing value while another process rewrites the line nonstop", async () => {
    const path = join(dir, "b.kept");
    const stop = `${path}.stop`;
    writeFileSync(path, line(0, 0));
    const writer = spawn(process.execPath, ["-e", WRITER, path, stop], { stdio: "pipe" });
    const exited = new Promise((resolve) => writer.once("exit", resolve));
    try {
      await new Promise<void>((resolve) => writer.stdout.once("data", () => resolve()));
      let last = 0;
      for (let i = 0; i < 2000; i++) {
        const out = keptField(path, 0);
        const err = keptField(path, 1);
        assert.equal(out % 4096, 0, `a torn value: ${out}`);
        assert.equal(err % 8192, 0, `a torn value: ${err}`);
        assert.ok(out >= last, `went back: ${out} < ${last}`);
        last = out;
        if (i % 100 === 0) await sleep(0);
      }
      assert.ok(last > 0, "the writer was seen writing");
    } finally {
      writeFileSync(stop, "");
      await exited;
      assert.ok(existsSync(stop));
    }
  });
});
