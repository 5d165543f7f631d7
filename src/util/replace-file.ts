import { existsSync } from "node:fs";
import { lstat, rename, unlink } from "node:fs/promises";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const ADDON = fileURLToPath(
  new URL("../../build/native/taskrouter-exchange.node", import.meta.url),
);

type Exchange = (a: string, b: string) => number;

const loaded = new Map<string, Exchange | undefined>();

/** native/rename-exchange.c's `exchange`, or undefined when the addon is missing or unusable. */
function exchanger(addon: string): Exchange | undefined {
  if (!loaded.has(addon)) {
    let fn: Exchange | undefined;
    try {
      if (existsSync(addon))
        fn = (createRequire(import.meta.url)(addon) as { exchange: Exchange }).exchange;
    } catch {
      fn = undefined; // the fallback below is rename(2): correct, only slower
    }
    loaded.set(addon, fn);
  }
  return loaded.get(addon);
}

/**
 * Puts the file at `from` in place of `to` as rename(2) does, atomically:
 * `to` names the old file or the new one, never neither. An existing
 * regular file at `to` is exchanged with `from` (renameat2's
 * RENAME_EXCHANGE, through native/rename-exchange.c) and its old content,
 * then at `from`, unlinked: ext4 starts writeback of a file renamed over
 * another inside the rename (165 ms for 256 MiB, measured), but not of an
 * exchanged one (docs/DECISIONS.md, "Replacing a file without ext4's
 * flush"). Without the addon, with no file at `to`, or where the exchange is
 * refused, this is rename(2); its errors are rename's. `addon`: the addon's
 * path (tests).
 */
export async function replaceFile(from: string, to: string, addon = ADDON): Promise<void> {
  const exchange = exchanger(addon);
  if (exchange && (await lstat(to).catch(() => undefined))?.isFile() && exchange(from, to) === 0) {
    try {
      await unlink(from);
      return;
    } catch (err) {
      // Something not a file was swapped in meanwhile: undo, and let rename decide.
      if (exchange(from, to) !== 0) throw err;
    }
  }
  await rename(from, to);
}
