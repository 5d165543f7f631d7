import type { BinPath } from "./paths.ts";

/** The parent of an image-relative path ("" for a top-level name and for the root). */
export function parentOf(p: BinPath): BinPath {
  const i = p.lastIndexOf("/");
  return i < 0 ? "" : p.slice(0, i);
}

/** One path's children: each reachable (true) or removed (false); `live` counts the true ones. */
interface Kids {
  map: Map<BinPath, boolean>;
  live: number;
}

/**
 * Values by image-relative path, with each path's children indexed, so the
 * paths under one are found in time proportional to their number, never by a
 * scan of the whole tree.
 *
 * Contract: `get`, `set`, `delete` as a Map's (the root is ""); `children(p)`
 * lists the paths one level below `p` that hold a value or have a
 * descendant that does (so entries left below a removed path stay
 * reachable); `values()` lists every value, in no particular order. Each
 * operation costs O(1) amortized (plus the length of the path's chain of
 * parents left without values, for `delete`), whatever was removed before.
 *
 * Removal marks a key instead of deleting it: V8's Map and Set keep a
 * deleted key in its hash bucket until the table is rebuilt, so removing
 * and adding the same key again and again (a layer turning `x` from a file
 * into a directory and back) makes each lookup of it walk a chain as long as
 * the table. Measured: 100,000 delete-then-add pairs of one key in a Set of
 * 20,000 others took 7.3 s; marking, 14 ms. The marks of a path's children
 * are dropped when they are next listed.
 */
export class PathTree<T> {
  private readonly vals = new Map<BinPath, T | undefined>();
  private readonly kids = new Map<BinPath, Kids>();

  get(p: BinPath): T | undefined {
    return this.vals.get(p);
  }

  set(p: BinPath, v: T): void {
    this.vals.set(p, v);
    for (let c = p; c !== ""; ) {
      const parent = parentOf(c);
      let k = this.kids.get(parent);
      if (!k) {
        k = { map: new Map(), live: 0 };
        this.kids.set(parent, k);
      }
      if (k.map.get(c) === true) return;
      k.map.set(c, true);
      k.live++;
      c = parent;
    }
  }

  delete(p: BinPath): void {
    if (this.vals.get(p) === undefined) return;
    this.vals.set(p, undefined);
    // Unlink it, and each parent left with neither a value nor children.
    for (let c = p; c !== ""; ) {
      if (this.vals.get(c) !== undefined || (this.kids.get(c)?.live ?? 0) > 0) return;
      const parent = parentOf(c);
      const k = this.kids.get(parent);
      if (k?.map.get(c) !== true) return;
      k.map.set(c, false);
      k.live--;
      c = parent;
    }
  }

  /** Whether `p` holds a value or has a descendant that does. */
  has(p: BinPath): boolean {
    return this.vals.get(p) !== undefined || (this.kids.get(p)?.live ?? 0) > 0;
  }

  children(p: BinPath): BinPath[] {
    const k = this.kids.get(p);
    if (!k) return [];
    const out: BinPath[] = [];
    for (const [c, on] of k.map) if (on) out.push(c);
    if (out.length < k.map.size) {
      k.map.clear();
      for (const c of out) k.map.set(c, true);
    }
    return out;
  }

  *values(): Generator<T> {
    for (const v of this.vals.values()) if (v !== undefined) yield v;
  }
}
