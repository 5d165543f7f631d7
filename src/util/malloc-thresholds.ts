import { addonPath, loadAddon } from "./addon.ts";

const MiB = 1024 * 1024;

/**
 * glibc malloc thresholds for the router process (docs/DECISIONS.md,
 * "Stdin without copies on either side"): freed memory up to `trim` bytes at the
 * top of the heap stays with the process, the heap grows `topPad` bytes
 * beyond each need, and allocations below `mmap` bytes come from the heap.
 */
export const MALLOC_THRESHOLDS = { trim: 128 * MiB, topPad: 32 * MiB, mmap: 32 * MiB } as const;

/** The environment variables by which an operator sets glibc's thresholds at start. */
const OPERATOR_VARS = ["MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_"];
/** GLIBC_TUNABLES naming any of these is the operator's choice too. */
const OPERATOR_TUNABLES = /glibc\.malloc\.(trim_threshold|top_pad|mmap_threshold)\b/;

const ADDON = addonPath("malloc");

interface Addon {
  tune(trim: number, topPad: number, mmap: number): boolean;
}

/** Why MALLOC_THRESHOLDS were not applied; `expected`: by the operator's choice (not a fault). */
export interface NotTuned {
  reason: string;
  expected: boolean;
}

/**
 * Applies MALLOC_THRESHOLDS to this process through native/malloc-tune.c.
 * Returns undefined once applied, else why they were not (the caller logs
 * it; the process then keeps glibc's defaults, or what was applied before a
 * refusal): the operator set glibc's thresholds (MALLOC_*_ variables or
 * GLIBC_TUNABLES: theirs are kept), the addon was not built (no Node headers
 * at install) or could not be loaded, or the C library refused them.
 * `addon`: the addon's path (tests).
 */
export function tuneMalloc(
  env: NodeJS.ProcessEnv = process.env,
  addon = ADDON,
): NotTuned | undefined {
  const set = OPERATOR_VARS.filter((v) => env[v] !== undefined);
  if (OPERATOR_TUNABLES.test(env.GLIBC_TUNABLES ?? "")) set.push("GLIBC_TUNABLES");
  if (set.length > 0) return { reason: `the operator's ${set.join(", ")} kept`, expected: true };
  const loaded = loadAddon<Addon>(addon);
  if ("why" in loaded) return { reason: loaded.why, expected: false };
  const { trim, topPad, mmap } = MALLOC_THRESHOLDS;
  try {
    if (loaded.exports.tune(trim, topPad, mmap)) return undefined;
  } catch (err) {
    return { reason: `${addon} could not be used: ${(err as Error).message}`, expected: false };
  }
  return { reason: "the C library refused some of them", expected: false };
}
