import type { Table } from "./report.ts";
import type { VariantResult } from "./rounds.ts";
import { fmtMs, fmtRate, fmtRatio, median, p99, rate } from "./stats.ts";

function baseMedian(results: Map<string, VariantResult>, name: string): number {
  const r = results.get(name);
  return r && !r.unavailable ? median(r.samples) : Number.NaN;
}

function unavailableRow(r: VariantResult, width: number): string[] {
  return [r.name, `unavailable: ${r.unavailable}`, ...Array(width - 2).fill("")];
}

/**
 * Latency samples (ms): median, p99, and the median's ratio to each
 * baseline's median (> 1× is slower than the baseline).
 */
export function latencyTable(
  results: Map<string, VariantResult>,
  baselines: string[],
  firstColumn?: { header: string; value: string },
): Table {
  const header = ["variant", "median", "p99", "n", ...baselines.map((b) => `vs ${b}`)];
  const rows = [...results.values()].map((r) => {
    const row = r.unavailable
      ? unavailableRow(r, header.length)
      : [
          r.name,
          fmtMs(median(r.samples)),
          fmtMs(p99(r.samples)),
          String(r.samples.length),
          ...baselines.map((b) => fmtRatio(median(r.samples), baseMedian(results, b))),
        ];
    return firstColumn ? [firstColumn.value, ...row] : row;
  });
  return { header: firstColumn ? [firstColumn.header, ...header] : header, rows };
}

/**
 * Transfer-time samples (ms) of `bytes` each: median and p99 time, the
 * throughput at the median (and at the p99 time: the slow end), and the
 * median throughput as a share of each baseline's.
 */
export function throughputTable(
  results: Map<string, VariantResult>,
  bytes: number,
  baselines: string[],
): Table {
  const header = [
    "variant",
    "median time",
    "p99 time",
    "throughput (median)",
    "throughput (p99)",
    "n",
    ...baselines.map((b) => `% of ${b}`),
  ];
  const rows = [...results.values()].map((r) => {
    if (r.unavailable) return unavailableRow(r, header.length);
    const m = median(r.samples);
    return [
      r.name,
      fmtMs(m),
      fmtMs(p99(r.samples)),
      fmtRate(rate(bytes, m)),
      fmtRate(rate(bytes, p99(r.samples))),
      String(r.samples.length),
      ...baselines.map((b) => {
        const base = baseMedian(results, b);
        return Number.isFinite(base) ? `${((100 * base) / m).toFixed(0)}%` : "–";
      }),
    ];
  });
  return { header, rows };
}

/** The median of a variant's samples, or NaN when it has none. */
export function medianOf(results: Map<string, VariantResult>, name: string): number {
  return baseMedian(results, name);
}
