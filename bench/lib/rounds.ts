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
 * Each round runs every variant once, starting with a different one each
 * round (so none always runs first, after a pause, or on a warm cache
 * another just filled). Warm-up rounds are discarded. A variant that throws is
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
    for (let i = 0; i < live.length; i++) {
      const v = live[(r + i) % live.length] as Variant;
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

/** A one-line progress indicator on stderr (a TTY only). */
export function progress(line: string): void {
  if (!process.stderr.isTTY) return;
  process.stderr.write(`\r\x1b[K${line ? `bench: ${line}` : ""}`);
}
