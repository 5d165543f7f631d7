/**
 * What the disk under a directory did while something ran: bytes written and
 * time busy, from /proc/diskstats (the whole device, every process: the
 * router's output files written back, the client's file, writeback another
 * variant left behind). A measurement for the report, never a target.
 */
import { readFile, stat } from "node:fs/promises";
import { median } from "./stats.ts";

/** Bytes written and milliseconds busy (io_ticks) so far, or undefined off Linux. */
export type DiskSample = { written: number; busyMs: number };

export interface DiskMeter {
  /** The device's counters now. */
  sample(): Promise<DiskSample | undefined>;
}

/** diskstats names a device by major and minor: the directory's device, as stat(2) gives it. */
export async function diskMeter(dir: string): Promise<DiskMeter> {
  const dev = (await stat(dir)).dev;
  // Linux's new_encode_dev: minor's low 8 bits, major's 12, minor's high 12.
  const major = (dev >> 8) & 0xfff;
  const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
  return {
    async sample() {
      const text = await readFile("/proc/diskstats", "utf8").catch(() => "");
      for (const line of text.split("\n")) {
        const f = line.trim().split(/\s+/);
        if (Number(f[0]) !== major || Number(f[1]) !== minor) continue;
        // Fields after the name: reads (4), writes: completed, merged, sectors (of 512 bytes), ms; in flight, io_ticks.
        const sectors = Number(f[9]);
        const ticks = Number(f[12]);
        if (!Number.isFinite(sectors) || !Number.isFinite(ticks)) return undefined;
        return { written: sectors * 512, busyMs: ticks };
      }
      return undefined;
    },
  };
}

/** Per variant: what the disk did during each of its runs. */
export class DiskLog {
  private readonly seen = new Map<string, DiskSample[]>();

  constructor(private readonly meter: DiskMeter) {}

  /** `run`, with the disk's work while it ran recorded under `name`. */
  wrap<T>(name: string, run: () => Promise<T>): () => Promise<T> {
    return async () => {
      const before = await this.meter.sample();
      const out = await run();
      const after = await this.meter.sample();
      if (before && after) {
        const list = this.seen.get(name) ?? [];
        list.push({
          written: after.written - before.written,
          busyMs: after.busyMs - before.busyMs,
        });
        this.seen.set(name, list);
      }
      return out;
    };
  }

  /** Medians of the variants named (warm-up rounds included), in that order; those never run are left out. */
  medians(names: string[]): { name: string; written: number; busyMs: number }[] {
    return names.flatMap((name) => {
      const s = this.seen.get(name);
      if (!s?.length) return [];
      return [
        { name, written: median(s.map((x) => x.written)), busyMs: median(s.map((x) => x.busyMs)) },
      ];
    });
  }
}
