import { readFileSync } from "node:fs";
import { availableParallelism, release, totalmem } from "node:os";
import { fmtBytes } from "./stats.ts";

/** The machine a run happened on, as Markdown lines for BENCHMARKS.md. */
export function machineLines(extra: string[] = []): string[] {
  const cpuinfo = (() => {
    try {
      return readFileSync("/proc/cpuinfo", "utf8");
    } catch {
      return "";
    }
  })();
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? "unknown";
  return [
    `- date: ${new Date().toISOString()}`,
    `- cores (nproc): ${availableParallelism()}`,
    `- memory: ${fmtBytes(totalmem())}`,
    `- CPU: ${model}`,
    `- kernel: ${release()}`,
    `- node: ${process.version}`,
    ...extra.map((e) => `- ${e}`),
  ];
}
