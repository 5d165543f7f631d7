import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { readFile, rm, writeFile } from "node:fs/promises";

/** Reads argv[1] in a tight loop until argv[2] exists: each read one byte repeated 64 KiB times. */
const READER = `const fs = require("node:fs"); const [f, stop] = process.argv.slice(1); let n = 0;
console.log("ready");
for (; !fs.existsSync(stop); n++) {
  let got; try { got = fs.readFileSync(f); } catch (e) { console.log("read failed: " + e.code); process.exit(1); }
  if (got.length !== 65536 || !got.every((c) => c === got[0])) { console.log("mixed content"); process.exit(1); }
}
console.log("reads " + n);`;

const CONTENTS = [Buffer.alloc(64 << 10, "a"), Buffer.alloc(64 << 10, "b")];

/** The content the i-th replacement puts at the path: 64 KiB of "a" (even i) or "b" (odd i). */
export function contentOf(i: number): Buffer {
  return CONTENTS[i % 2] as Buffer;
}

/**
 * Runs `replace(i)` `times` times (each puts `contentOf(i)` at `path`,
 * which holds `contentOf(1)` at the start) while another process opens and
 * reads `path` in a tight loop, and asserts every read found a whole
 * content and never no file: the replacement is atomic. Stops the reader
 * (by its stop file, `${path}.stop`) also on failure.
 */
export async function assertAtomicReplacements(
  path: string,
  times: number,
  replace: (i: number) => Promise<void>,
): Promise<void> {
  await writeFile(path, contentOf(1));
  const stop = `${path}.stop`;
  const reader = spawn(process.execPath, ["-e", READER, path, stop], { stdio: "pipe" });
  const out: Buffer[] = [];
  reader.stdout.on("data", (c: Buffer) => out.push(c));
  const exited = new Promise<number | null>((resolve) => reader.once("exit", resolve));
  let code: number | null;
  try {
    // "ready": reading from now on (or the reader died first: its output says why).
    await Promise.race([once(reader.stdout, "data"), exited]);
    assert.equal(reader.exitCode, null, Buffer.concat(out).toString());
    for (let i = 0; i < times; i++) await replace(i);
  } finally {
    await writeFile(stop, "");
    code = await exited;
    await rm(stop, { force: true });
  }
  assert.equal(code, 0, Buffer.concat(out).toString());
  assert.match(Buffer.concat(out).toString(), /^ready\nreads [1-9]\d*\n$/);
  assert.ok((await readFile(path)).equals(contentOf(times - 1)), "the last content");
}
