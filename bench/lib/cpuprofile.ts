/** Summaries of V8 .cpuprofile data: self time by function and by area of code. */

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

export interface CpuProfile {
  nodes: { id: number; callFrame: CallFrame }[];
  /** Microseconds on the monotonic clock (the one of process.hrtime). */
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

/**
 * The part of a profile sampled between two monotonic-clock instants (µs,
 * as from `process.hrtime.bigint() / 1000n`): e.g. a transfer without the
 * process's start-up.
 */
export function window(p: CpuProfile, fromUs: number, toUs: number): CpuProfile {
  const samples: number[] = [];
  const timeDeltas: number[] = [];
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    if (t >= fromUs && t <= toUs) {
      samples.push(p.samples[i] as number);
      timeDeltas.push(p.timeDeltas[i] ?? 0);
    }
  }
  return { ...p, startTime: fromUs, samples, timeDeltas };
}

export interface SelfTime {
  name: string;
  ms: number;
  share: number;
}

/** The area of code a frame belongs to (a package, a Node subsystem, or ours). */
export function area(f: CallFrame): string {
  const u = f.url;
  if (!u) {
    if (f.functionName.startsWith("(")) return f.functionName; // (garbage collector), (program), (idle)
    return "native/builtins";
  }
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(u);
  if (pkg) return pkg[1] as string;
  if (u.includes("/src/")) return `ours: ${u.slice(u.indexOf("/src/") + 1).replace(/\?.*$/, "")}`;
  const node = /^node:(?:internal\/)?([a-z_0-9]+)/.exec(u);
  if (node) return `node: ${node[1]}`;
  return u;
}

function selfMs(p: CpuProfile): Map<number, number> {
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i] as number;
    self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0) / 1000);
  }
  return self;
}

/** Self time grouped by `key`, largest first, idle time excluded from the shares. */
function group(p: CpuProfile, key: (f: CallFrame) => string): SelfTime[] {
  const frames = new Map(p.nodes.map((n) => [n.id, n.callFrame]));
  const by = new Map<string, number>();
  for (const [id, ms] of selfMs(p)) {
    const f = frames.get(id);
    if (!f || f.functionName === "(idle)") continue;
    const k = key(f);
    by.set(k, (by.get(k) ?? 0) + ms);
  }
  const total = [...by.values()].reduce((a, b) => a + b, 0);
  return [...by.entries()]
    .map(([name, ms]) => ({ name, ms, share: total > 0 ? ms / total : 0 }))
    .sort((a, b) => b.ms - a.ms);
}

export function byArea(p: CpuProfile): SelfTime[] {
  return group(p, area);
}

export function byFunction(p: CpuProfile): SelfTime[] {
  return group(p, (f) => {
    const where = f.url ? ` ${area(f)}:${f.lineNumber + 1}` : "";
    return `${f.functionName || "(anonymous)"}${where}`;
  });
}

/** Busy (non-idle) and idle milliseconds of the profile. */
export function busyIdle(p: CpuProfile): { busyMs: number; idleMs: number } {
  const frames = new Map(p.nodes.map((n) => [n.id, n.callFrame]));
  let busyMs = 0;
  let idleMs = 0;
  for (const [id, ms] of selfMs(p)) {
    if (frames.get(id)?.functionName === "(idle)") idleMs += ms;
    else busyMs += ms;
  }
  return { busyMs, idleMs };
}
