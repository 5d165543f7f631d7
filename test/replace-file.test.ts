/**
 * Replacing a local file (src/util/replace-file.ts, used by `taskrouter cp`
 * downloads) and the addon behind it (native/rename-exchange.c): the
 * addon's exchange and its argument checks; replaceFile over a file, to a
 * new name, over a directory and without the addon; atomic for a reader
 * throughout. Skips the addon's own tests, saying why, where it could not
 * be built (no Node headers at install); replaceFile is tested either way.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { link, mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { replaceFile } from "../src/util/replace-file.ts";
import { assertAtomicReplacements, contentOf } from "./helpers/atomic-reader.ts";

const ADDON = fileURLToPath(new URL("../build/native/taskrouter-exchange.node", import.meta.url));
const skip = existsSync(ADDON)
  ? false
  : `${ADDON} was not built (node_api.h not found by native/build.sh)`;
if (skip) console.log(`# skipping addon tests: ${skip}`);

let dir = "";
let n = 0;
/** A fresh directory under this suite's temp dir. */
async function fresh(): Promise<string> {
  const d = join(dir, String(n++));
  await mkdir(d);
  return d;
}

describe("replaceFile and native/rename-exchange.c", () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "taskrouter-replace-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("exchange swaps two names atomically; a refusal is its errno and changes nothing", {
    skip,
  }, async () => {
    const d = await fresh();
    const { exchange } = createRequire(import.meta.url)(ADDON) as {
      exchange: (a: unknown, b: unknown) => number;
    };
    await writeFile(join(d, "a"), "A");
    await writeFile(join(d, "b"), "B");
    assert.equal(exchange(join(d, "a"), join(d, "b")), 0);
    assert.deepEqual(
      [await readFile(join(d, "a"), "utf8"), await readFile(join(d, "b"), "utf8")],
      ["B", "A"],
    );
    assert.equal(exchange(join(d, "a"), join(d, "missing")), 2); // ENOENT
    assert.deepEqual((await readdir(d)).sort(), ["a", "b"]);
    for (const args of [
      [],
      [join(d, "a")],
      [1, 2],
      ["", join(d, "b")],
      [`${join(d, "a")}\0x`, join(d, "b")],
    ]) {
      assert.throws(
        () => exchange(...(args as [unknown, unknown])),
        TypeError,
        JSON.stringify(args),
      );
    }
    assert.deepEqual(
      [await readFile(join(d, "a"), "utf8"), await readFile(join(d, "b"), "utf8")],
      ["B", "A"],
    );
  });

  for (const [label, addon] of [
    ["with the addon", ADDON],
    ["without the addon (rename)", join("/nonexistent", "taskrouter-exchange.node")],
  ] as const) {
    it(`over a file: the new content in place, the old one only where else it is linked or open; nothing left (${label})`, async (t) => {
      if (addon === ADDON && skip) return t.skip(skip);
      const d = await fresh();
      const p = (f: string) => join(d, f);
      await writeFile(p("target"), "old");
      await link(p("target"), p("hard"));
      const held = await open(p("target"), "r");
      try {
        await writeFile(p(".tmp"), "new");
        await replaceFile(p(".tmp"), p("target"), addon);
        assert.equal(await readFile(p("target"), "utf8"), "new");
        assert.equal(await readFile(p("hard"), "utf8"), "old");
        assert.equal(await held.readFile("utf8"), "old");
        assert.deepEqual((await readdir(d)).sort(), ["hard", "target"]);
      } finally {
        await held.close();
      }
      // To a new name: renamed.
      await writeFile(p(".tmp2"), "fresh");
      await replaceFile(p(".tmp2"), p("new"), addon);
      assert.equal(await readFile(p("new"), "utf8"), "fresh");
      // Over a directory: rename's error, and nothing moved.
      await mkdir(p("dir"));
      await writeFile(p(".tmp3"), "x");
      await assert.rejects(replaceFile(p(".tmp3"), p("dir"), addon), { code: "EISDIR" });
      assert.deepEqual((await readdir(d)).sort(), [".tmp3", "dir", "hard", "new", "target"]);
      assert.deepEqual(await readdir(p("dir")), []);
    });

    it(`atomic for a reader opening the path throughout (${label})`, async (t) => {
      if (addon === ADDON && skip) return t.skip(skip);
      const d = await fresh();
      await assertAtomicReplacements(join(d, "f"), 200, async (i) => {
        await writeFile(join(d, ".next"), contentOf(i));
        await replaceFile(join(d, ".next"), join(d, "f"), addon);
      });
      assert.deepEqual((await readdir(d)).sort(), ["f"]);
    });
  }
});
