import { check, type Target, target } from "./report.ts";
import type { VariantResult } from "./rounds.ts";
import { fmtRate, rate } from "./stats.ts";
import { medianOf } from "./tables.ts";

/** Our variants, as BenchContext.ours names them: every ratio goal holds for both runtimes. */
export const OURS = ["ours (host)", "ours (runc)"] as const;

/** A baseline variant of the same run and how goals name it. */
export interface Baseline {
  /** The variant's name in the results ("ssh (multiplexed)"). */
  name: string;
  /** How the goal says it ("ssh", "a raw pipe"). */
  label: string;
}

/**
 * One target per runtime of ours: throughput (at the median transfer time of
 * `bytes`) ≥ `min` × the baseline's, both from the same run (`results`).
 * `percent` states the goal and the measurement as a share ("≥ 50% of a raw
 * pipe"), otherwise as a ratio ("≥ 1.25× ssh"). A variant without samples
 * gives "n/a" (its table row says why).
 */
export function versusTargets(
  results: Map<string, VariantResult>,
  bytes: number,
  base: Baseline,
  min: number,
  style: "ratio" | "percent",
): Target[] {
  const baseRate = rate(bytes, medianOf(results, base.name));
  return OURS.map((name) => {
    const ours = rate(bytes, medianOf(results, name));
    const x = ours / baseRate;
    const goal =
      style === "ratio"
        ? `${name} ≥ ${min}× ${base.label}`
        : `${name} ≥ ${(100 * min).toFixed(0)}% of ${base.label}`;
    const shown = !Number.isFinite(x)
      ? "–"
      : style === "ratio"
        ? `${x.toFixed(2)}×`
        : `${(100 * x).toFixed(0)}%`;
    const measured = Number.isFinite(x)
      ? `${shown} (${fmtRate(ours)} vs ${fmtRate(baseRate)})`
      : shown;
    return target(
      goal,
      measured,
      check(x, (v) => v >= min),
    );
  });
}
