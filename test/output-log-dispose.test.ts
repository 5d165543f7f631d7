/**
 * OutputLog.dispose racing its first spill (src/exec/output-log.ts), with
 * real files: once dispose() resolved and the spill's open() finished, no
 * descriptor of this process refers to the spill file and the file is gone
 * (dispose found no file to close or remove while it was opening).
 * The open is observed through node:fs/promises (syncBuiltinESMExports), so
 * the check comes after it whatever the order of the two.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync, readlinkSync } from "node:fs";
import fsp, { mkdtemp, rm } from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { ByteBudget, OutputLog } from "../src/exec/output-log.ts";

const KiB = 1024;

/** Paths this process holds descriptors to. */
function openPaths(): string[] {
  const out: string[] = [];
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      out.push(readlinkSync(`/proc/self/fd/${fd}`));
    } catch {} // closed meanwhile (the readdir's own descriptor)
  }
  return out;
}

describe("OutputLog: dispose during the first spill", () => {
  const dirs: string[] = [];
  const origOpen = fsp.open;
  after(async () => {
    fsp.open = origOpen;
    syncBuiltinESMExports();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  for (const when of ["at once", "while its file opens"] as const) {
    it(`leaves no spill file and no descriptor (dispose ${when})`, async () => {
      const dir = await mkdtemp(join(tmpdir(), "taskrouter-spill-"));
      dirs.push(dir);
      const spillPath = join(dir, "spill", "exec.stdout");
      const opens: Promise<unknown>[] = [];
      let opening: () => void = () => {};
      const opened = new Promise<void>((r) => {
        opening = r;
      });
      fsp.open = ((...args: Parameters<typeof origOpen>) => {
        const p = origOpen(...args);
        if (args[0] === spillPath) {
          opens.push(p.catch(() => {}));
          opening();
        }
        return p;
      }) as typeof origOpen;
      syncBuiltinESMExports();
      const errors: unknown[] = [];
      const log = new OutputLog({
        memoryLimit: 64 * KiB,
        spillPath,
        budget: new ByteBudget(1 << 30),
        onError: (err) => errors.push(err),
      });
      log.append(Buffer.alloc(100 * KiB, 7)); // past the limit: the first spill starts
      if (when !== "at once") await opened; // the open is under way
      await log.dispose();
      await opened; // (it may come after dispose: the check comes after it)
      assert.equal(opens.length, 1);
      await Promise.all(opens);
      await new Promise((r) => setImmediate(r)); // what follows the open in the spill
      assert.deepEqual(
        openPaths().filter((p) => p.startsWith(spillPath)),
        [],
        "a descriptor of the spill file is left open",
      );
      assert.equal(existsSync(spillPath), false, "the spill file is left on disk");
      assert.deepEqual(errors, []);
    });
  }
});
