import { addonPath, loadAddon } from "./addon.ts";

const ADDON = addonPath("preallocate");

type Allocate = (fd: number, length: number) => number;

const loaded = new Map<string, Allocate | undefined>();

/** native/preallocate.c's `allocate`, or undefined when the addon is missing or unusable. */
function allocator(addon: string): Allocate | undefined {
  if (!loaded.has(addon)) {
    const a = loadAddon<{ allocate: Allocate }>(addon);
    // Without it a file is written as before: correct, only slower on ext4.
    loaded.set(addon, "why" in a ? undefined : a.exports.allocate);
  }
  return loaded.get(addon);
}

/**
 * Allocates the blocks of the first `length` bytes of the new, empty file
 * open at `fd` before they are written (fallocate(2) through
 * native/preallocate.c): the file is then `length` bytes of zeros until
 * written, and the caller sets its final size if it wrote fewer. Why: ext4
 * writes back a file whose blocks it had not yet allocated inside a rename
 * over an existing file (auto_da_alloc; 165 ms for 256 MiB, measured), not
 * one whose blocks are allocated (docs/DECISIONS.md, "Blocks allocated ahead
 * of a file's bytes"). Best effort: returns whether it was done (not without
 * the addon, on a filesystem without fallocate, without room). `addon`: the
 * addon's path (tests).
 */
export function preallocate(fd: number, length: number, addon = ADDON): boolean {
  const allocate = allocator(addon);
  if (!allocate || length <= 0) return false;
  try {
    return allocate(fd, length) === 0;
  } catch {
    return false; // a length past 2^53: nothing allocated
  }
}
