/** Summary statistics and number formatting for the bench tables. */

/** The p-th percentile (0..100) by nearest rank; NaN for no samples. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))] as number;
}

export const median = (xs: readonly number[]): number => percentile(xs, 50);
export const p99 = (xs: readonly number[]): number => percentile(xs, 99);

export interface Summary {
  n: number;
  median: number;
  p99: number;
}

export function summarize(xs: readonly number[]): Summary {
  return { n: xs.length, median: median(xs), p99: p99(xs) };
}

/** "7.52 ms", "1.23 s", "412 µs". */
export function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return "–";
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms >= 100) return `${ms.toFixed(0)} ms`;
  if (ms >= 1) return `${ms.toFixed(2)} ms`;
  return `${(ms * 1000).toFixed(0)} µs`;
}

/** Decimal units as in MEASUREMENTS.md: "1.55 GB/s", "820 MB/s". */
export function fmtRate(bytesPerSec: number): string {
  if (!Number.isFinite(bytesPerSec)) return "–";
  if (bytesPerSec >= 1e9) return `${(bytesPerSec / 1e9).toFixed(2)} GB/s`;
  return `${(bytesPerSec / 1e6).toFixed(0)} MB/s`;
}

/** Binary units for sizes: "1.0 GiB", "256 MiB", "12 KiB". */
export function fmtBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(1)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(0)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(0)} KiB`;
  return `${n} B`;
}

/** "1.52×" for ours / base, or "–" when either is missing. */
export function fmtRatio(ours: number, base: number): string {
  if (!Number.isFinite(ours) || !Number.isFinite(base) || base === 0) return "–";
  return `${(ours / base).toFixed(2)}×`;
}

/** Bytes per second for `bytes` moved in `ms`. */
export function rate(bytes: number, ms: number): number {
  return ms > 0 ? (bytes * 1000) / ms : Number.NaN;
}
