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
 * well under a millisecond (docs/DECISIONS.md, "Stdin without copies on either
 * side").
 *
 * V8's `gc` is reached through a context of its own (`--expose-gc` set at
 * run time for that moment, as Node's own tests do); no context gets a `gc`
 * global. Where that fails, or with TASKROUTER_YOUNG_GC=0 (an escape hatch
 * should a Node release forbid run-time flags), `youngCollection()` returns
 * undefined and nothing is collected early.
 */

type Gc = (opts: { type: "minor" | "major" }) => void;

let gc: Gc | null | undefined;

/**
 * A function running one young-generation collection, or undefined when V8's
 * `gc` is out of reach or TASKROUTER_YOUNG_GC=0 turns this off. The first
 * call sets `--expose-gc` only while it takes the function from a context of
 * its own: later contexts and workers get no `gc` global.
 */
export function youngCollection(env: NodeJS.ProcessEnv = process.env): (() => void) | undefined {
  if (env.TASKROUTER_YOUNG_GC === "0") return undefined;
  if (gc === undefined) {
    try {
      setFlagsFromString("--expose-gc");
      const fn: unknown = runInNewContext("typeof gc === 'function' ? gc : undefined");
      gc = typeof fn === "function" ? (fn as Gc) : null;
    } catch {
      gc = null;
    } finally {
      setFlagsFromString("--no-expose-gc");
    }
  }
  const run = gc;
  return run ? () => run({ type: "minor" }) : undefined;
}

/**
 * Counts bytes of short-lived external garbage and runs a young collection
 * each time `every` bytes were counted since the last one. Without
 * `collect`, V8's is looked up when first needed (`youngCollection`).
 */
export class YoungCollector {
  private since = 0;
  /** Collections run so far. */
  collections = 0;
  /** null: not looked up yet. */
  private collect: (() => void) | undefined | null = null;

  constructor(
    private readonly every: number,
    collect?: () => void,
  ) {
    if (collect) this.collect = collect;
  }

  /** Records `n` bytes; collects once `every` bytes were recorded since the last collection. */
  add(n: number): void {
    this.since += n;
    if (this.since < this.every) return;
    this.since = 0;
    if (this.collect === null) this.collect = youngCollection();
    if (!this.collect) return;
    this.collections++;
    this.collect();
  }
}
