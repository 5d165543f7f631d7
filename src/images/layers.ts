import type { Readable } from "node:stream";
import { extract } from "tar-stream";
import { InvalidArgumentError } from "../errors.ts";
import { MAX } from "../limits.ts";
import type { BlobBatch } from "./blob-store.ts";
import { dirEntry, type Entry, type Manifest } from "./manifest.ts";
import { PathTree, parentOf } from "./path-tree.ts";
import { type BinPath, comparePaths, fromUtf8, joinRel, show } from "./paths.ts";

const WHITEOUT = ".wh.";
const OPAQUE = ".wh..wh..opq";

/** An image-relative path from a tar entry name; InvalidArgument for one that climbs out. */
export function tarPath(name: string): BinPath {
  // No image path is longer (and a longer one costs its depth squared below).
  if (name.length > MAX.path + 2) {
    throw new InvalidArgumentError(
      `archive entry ${show(name.slice(0, 64))}… is over ${MAX.path} bytes`,
    );
  }
  const parts = fromUtf8(name)
    .split("/")
    .filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw new InvalidArgumentError(`archive entry ${show(name)} has ".."`);
  return parts.join("/");
}

function baseOf(p: BinPath): BinPath {
  return p.slice(p.lastIndexOf("/") + 1);
}

/** What one layer did so far: the paths it added, the paths it whited out. */
interface Layer {
  added: Set<BinPath>;
  /** Paths below which no entry of a lower layer is left (whited out, or emptied by `.wh..wh..opq`). */
  cleared: Set<BinPath>;
}

/**
 * Builds an image tree from tar layers applied in order (an OCI or Docker
 * image's layers, or one tar of a plain directory). With `whiteouts`, a
 * `.wh.NAME` entry deletes NAME (and its subtree) of earlier layers and
 * `.wh..wh..opq` empties its directory of earlier layers' entries. Hard links
 * become separate files with the same blob; device files and FIFOs are left
 * out (counted in `skipped`). Parents missing from a layer are made (0755).
 */
export class TreeBuilder {
  /** The tree so far (see PathTree: a subtree is removed in time proportional to its size). */
  private readonly entries = new PathTree<Entry>();
  skipped = 0;

  constructor() {
    this.entries.set("", dirEntry(""));
  }

  /**
   * Applies one layer read from `tar` (uncompressed), storing file contents
   * through `batch`. `onEntry` is called for each tar entry (what it throws
   * ends the layer: `tar` is destroyed and the error thrown).
   */
  async apply(
    tar: Readable,
    batch: BlobBatch,
    opts: { whiteouts: boolean; onEntry?: () => void },
  ): Promise<void> {
    try {
      await this.read(tar, batch, opts);
    } catch (err) {
      tar.destroy();
      throw err;
    }
  }

  private async read(
    tar: Readable,
    batch: BlobBatch,
    opts: { whiteouts: boolean; onEntry?: () => void },
  ): Promise<void> {
    const layer: Layer = { added: new Set(), cleared: new Set() };
    const ex = extract();
    tar.once("error", (err) => ex.destroy(err));
    tar.pipe(ex as unknown as NodeJS.WritableStream);
    for await (const entry of ex) {
      opts.onEntry?.();
      const h = entry.header;
      const path = tarPath(h.name);
      const name = baseOf(path);
      if (opts.whiteouts && name.startsWith(WHITEOUT)) {
        const dir = parentOf(path);
        if (name === OPAQUE) this.whiteOut(dir, layer, false);
        else this.whiteOut(joinRel(dir, name.slice(WHITEOUT.length)), layer, true);
        entry.resume();
        continue;
      }
      const base = {
        path,
        mode: (h.mode ?? 0o644) & 0o7777,
        uid: h.uid ?? 0,
        gid: h.gid ?? 0,
        mtimeNs: BigInt((h.mtime ?? new Date(0)).getTime()) * 1_000_000n,
        size: 0,
      };
      let e: Entry | undefined;
      switch (h.type) {
        case "file":
        case "contiguous-file": {
          const ref = await batch.write(entry as unknown as AsyncIterable<Uint8Array>);
          e = { ...base, type: "file", size: ref.size, digest: ref.digest };
          break;
        }
        case "directory":
          e = { ...base, type: "dir" };
          break;
        case "symlink":
          e = { ...base, type: "symlink", target: fromUtf8(h.linkname ?? "") };
          break;
        case "link": {
          const target = this.entries.get(tarPath(h.linkname ?? ""));
          if (target?.type !== "file") {
            throw new InvalidArgumentError(`hard link ${show(path)} to a missing file`);
          }
          e = { ...target, path };
          break;
        }
        default:
          this.skipped++;
      }
      entry.resume();
      if (!e || path === "") {
        if (e?.type === "dir") this.entries.set("", { ...e, path: "" });
        continue;
      }
      this.put(e, layer.added);
    }
  }

  private put(e: Entry, added: Set<BinPath>): void {
    for (let p = parentOf(e.path), chain: BinPath[] = []; ; p = parentOf(p)) {
      const cur = this.entries.get(p);
      if (cur?.type === "dir") {
        for (const d of chain.reverse()) {
          this.entries.set(d, dirEntry(d));
          added.add(d);
        }
        break;
      }
      if (cur) this.removeUnder(p, true); // a non-directory in the way
      chain.push(p);
    }
    const old = this.entries.get(e.path);
    if (old?.type === "dir" && e.type !== "dir") this.removeUnder(e.path, true);
    this.entries.set(e.path, e);
    added.add(e.path);
  }

  /**
   * A whiteout of this layer: removes what lower layers left at `dir` (when
   * `self`) and below it, keeping what this layer added. Below a path this
   * layer already whited out nothing of lower layers is left, so that is not
   * walked again.
   */
  private whiteOut(dir: BinPath, layer: Layer, self: boolean): void {
    if (!this.entries.has(dir)) return; // nothing there (and no walk of a deep path's parents)
    for (let p = dir; p !== ""; ) {
      p = parentOf(p);
      if (layer.cleared.has(p)) return;
    }
    this.removeUnder(dir, self, layer);
    layer.cleared.add(dir);
  }

  /**
   * Removes `dir`'s subtree (and `dir` itself when `self`); with `layer`,
   * keeps what it added and does not descend below what it cleared.
   */
  private removeUnder(dir: BinPath, self: boolean, layer?: Layer): void {
    const stack: BinPath[] = [dir];
    for (let p = stack.pop(); p !== undefined; p = stack.pop()) {
      if (!layer?.cleared.has(p)) {
        for (const k of this.entries.children(p)) stack.push(k);
      }
      if (p === "" || (p === dir && !self) || layer?.added.has(p)) continue;
      this.entries.delete(p);
    }
  }

  manifest(): Manifest {
    const entries = [...this.entries.values()].sort((a, b) => comparePaths(a.path, b.path));
    return { entries };
  }
}
