/** Runs a scenario's variants alternately, round after round, after warm-up rounds. */

export interface Variant {
  name: string;
  /** One measurement (ms, bytes/s… as the scenario defines); throws on a wrong result. */
  run: () => Promise<number>;
}

/** A variant that cannot run here, with the reason shown in the table. */
export interface Missing {
  name: string;
  unavailable: string;
}

export interface VariantResult {
  name: string;
  samples: number[];
  /** Why there are no samples (not available here, or it failed). */
  unavailable?: string;
}

export interface RoundOptions {
  rounds: number;
  warmup: number;
  /** Shown in the progress line on stderr. */
  label: string;
}

/**
 * Each round runs every variant once, in an order shuffled anew each round
 * (seeded: the same orders every run), so none always runs first, after a
 * pause, on a warm cache another just filled, or right after the same other
 * variant (a rotation kept the cyclic order: the variant after `runc exec`
 * always paid for the machine settling after it). Warm-up rounds are discarded. A variant that throws is
 * marked unavailable with the error and dropped; the others go on.
 */
export async function alternate(
  variants: (Variant | Missing)[],
  opts: RoundOptions,
): Promise<Map<string, VariantResult>> {
  const results = new Map<string, VariantResult>();
  const live: Variant[] = [];
  for (const v of variants) {
    if ("unavailable" in v)
      results.set(v.name, { name: v.name, samples: [], unavailable: v.unavailable });
    else {
      results.set(v.name, { name: v.name, samples: [] });
      live.push(v);
    }
  }
  const total = opts.warmup + opts.rounds;
  for (let r = 0; r < total; r++) {
    progress(`${opts.label}: ${r < opts.warmup ? "warm-up" : "round"} ${r + 1}/${total}`);
    for (const v of shuffled(live, r)) {
      const res = results.get(v.name) as VariantResult;
      if (res.unavailable) continue;
      try {
        const x = await v.run();
        if (r >= opts.warmup) res.samples.push(x);
      } catch (err) {
        res.unavailable = `failed: ${err instanceof Error ? err.message : String(err)}`.slice(
          0,
          300,
        );
        res.samples = [];
      }
    }
  }
  progress("");
  return results;
}

/** `items` in an order drawn from `seed` (Fisher-Yates with mulberry32). */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  let state = (seed + 1) * 0x9e3779b9;
  const next = (): number => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

/** A one-line progress indicator on stderr (a TTY only). */
export function progress(line: string): void {
  if (!process.stderr.isTTY) return;
  process.stderr.write(`\r\x1b[K${line ? `bench: ${line}` : ""}`);
}
