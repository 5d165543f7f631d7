import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

/**
 * Young-generation collections asked for by code that knows it left garbage
 * V8 cannot weigh. Node's HTTP/2 hands every socket read to JS as a fresh
 * ArrayBuffer (64 KiB); once its bytes are copied out it is garbage, but
 * only a collection frees it. Receiving allocates little else on the JS
 * heap, so scavenges come seldom, and meanwhile the dead buffers count
 * against the old generation's limit: V8 answers with full mark-compacts
 * (10-16 per 256 MiB of stdin, ~30 ms of CPU each) and their pages come
 * back cold. A scavenge every few MiB frees them while they are young, for
 * well under a millisecond (docs/DECISIONS.md, "A young collection per 8 MiB
 * received").
 *
 * V8's `gc` is reached through a context of its own (`--expose-gc` set at
 * run time, as Node's own tests do); the main context gets no `gc` global.
 * Where that fails, `youngCollection()` returns undefined and nothing is
 * collected early.
 */

type Gc = (opts: { type: "minor" | "major" }) => void;

let gc: Gc | null | undefined;

/** A function running one young-generation collection, or undefined when V8's `gc` is out of reach. */
export function youngCollection(): (() => void) | undefined {
  if (gc === undefined) {
    try {
      setFlagsFromString("--expose-gc");
      const fn: unknown = runInNewContext("typeof gc === 'function' ? gc : undefined");
      gc = typeof fn === "function" ? (fn as Gc) : null;
    } catch {
      gc = null;
    }
  }
  const run = gc;
  return run ? () => run({ type: "minor" }) : undefined;
}

/**
 * Counts bytes of short-lived external garbage and runs a young collection
 * each time `every` bytes were counted since the last one.
 */
export class YoungCollector {
  private since = 0;
  /** Collections run so far. */
  collections = 0;

  constructor(
    private readonly every: number,
    private readonly collect: (() => void) | undefined = youngCollection(),
  ) {}

  /** Records `n` bytes; collects once `every` bytes were recorded since the last collection. */
  add(n: number): void {
    this.since += n;
    if (this.since < this.every || !this.collect) return;
    this.since = 0;
    this.collections++;
    this.collect();
  }
}
