/**
 * The router's malloc thresholds (src/util/malloc-thresholds.ts and the
 * addon native/malloc-tune.c): applied in a fresh Node process, the operator's
 * MALLOC_*_ variables kept, the addon's argument checks, and the router
 * saying so in its log when it keeps glibc's defaults. Skips, saying why,
 * where the addon could not be built (no Node headers at install).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { pino } from "pino";
import { MALLOC_THRESHOLDS, tuneMalloc } from "../src/util/malloc-thresholds.ts";
import { startRouter } from "./helpers/router.ts";
import { closeChecked } from "./helpers/wire-common.ts";

const ADDON = fileURLToPath(new URL("../build/native/taskrouter-malloc.node", import.meta.url));
const MODULE = fileURLToPath(new URL("../src/util/malloc-thresholds.ts", import.meta.url));
const built = existsSync(ADDON);
const skip = built ? false : `${ADDON} was not built (node_api.h not found by native/build.sh)`;
if (skip) console.log(`# skipping addon tests: ${skip}`);

/** `tuneMalloc()` in a fresh Node process with `env`; its JSON result ("null": applied). */
async function tuneInChild(env: NodeJS.ProcessEnv): Promise<unknown> {
  const code = `import { tuneMalloc } from ${JSON.stringify(MODULE)};
    console.log(JSON.stringify(tuneMalloc() ?? null));`;
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ["--import", "tsx", "--input-type=module", "-e", code],
    { env, timeout: 30_000 },
  );
  return JSON.parse(stdout);
}

function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith("MALLOC_")) delete env[k];
  return env;
}

describe("malloc thresholds", () => {
  it("are applied in a fresh process", { skip }, async () => {
    assert.equal(await tuneInChild(cleanEnv()), null);
  });

  it("keep the operator's MALLOC_*_ variables, without loading the addon", async () => {
    const env = { ...cleanEnv(), MALLOC_TOP_PAD_: "1048576" };
    assert.deepEqual(await tuneInChild(env), {
      reason: "the operator's MALLOC_TOP_PAD_ kept",
      expected: true,
    });
    assert.deepEqual(tuneMalloc({ MALLOC_TRIM_THRESHOLD_: "0", MALLOC_MMAP_THRESHOLD_: "1" }), {
      reason: "the operator's MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_ kept",
      expected: true,
    });
    assert.deepEqual(tuneMalloc({ GLIBC_TUNABLES: "glibc.malloc.top_pad=0:glibc.rtld.x=1" }), {
      reason: "the operator's GLIBC_TUNABLES kept",
      expected: true,
    });
    assert.equal(
      tuneMalloc({ GLIBC_TUNABLES: "glibc.malloc.arena_max=2" }, "/nonexistent")?.expected,
      false,
    );
  });

  it("are accepted by the addon, which refuses anything but byte counts", { skip }, () => {
    const addon = createRequire(import.meta.url)(ADDON) as { tune: (...a: unknown[]) => boolean };
    const { trim, topPad, mmap } = MALLOC_THRESHOLDS;
    assert.equal(addon.tune(trim, topPad, mmap), true);
    for (const bad of [
      [-1, 0, 0],
      [2 ** 31, 0, 0],
      [1.5, 0, 0],
      ["1", 0, 0],
      [0, 0],
      [0, 0, null],
    ]) {
      assert.throws(() => addon.tune(...bad), TypeError, `accepted ${JSON.stringify(bad)}`);
    }
  });

  it("report an addon that is missing or cannot be loaded, and change nothing", async () => {
    const missing = tuneMalloc({}, "/nonexistent/taskrouter-malloc.node");
    assert.equal(missing?.expected, false);
    assert.match(missing?.reason ?? "", /is missing/);
    const dir = await mkdtemp(join(tmpdir(), "taskrouter-malloc-"));
    try {
      const fake = join(dir, "taskrouter-malloc.node");
      await writeFile(fake, "not an ELF file");
      const broken = tuneMalloc({}, fake);
      assert.equal(broken?.expected, false);
      assert.match(broken?.reason ?? "", /could not be used/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("kept at the operator's values are reported in the router's log (info)", async () => {
    const saved = process.env.MALLOC_TOP_PAD_;
    process.env.MALLOC_TOP_PAD_ = "1048576";
    try {
      const logs: Record<string, unknown>[] = [];
      const log = pino({ level: "info" }, { write: (l: string) => void logs.push(JSON.parse(l)) });
      const r = await startRouter({}, log);
      try {
        const line = logs.find((l) => l.msg === "malloc thresholds not applied");
        assert.ok(line, "no log line");
        assert.equal(line.reason, "the operator's MALLOC_TOP_PAD_ kept");
      } finally {
        await closeChecked(r, []);
      }
    } finally {
      if (saved === undefined) delete process.env.MALLOC_TOP_PAD_;
      else process.env.MALLOC_TOP_PAD_ = saved;
    }
  });
});
