import type { Readable } from "node:stream";
import { extract } from "tar-stream";
import { InvalidArgumentError } from "../errors.ts";
import type { BlobBatch } from "./blob-store.ts";
import { dirEntry, type Entry, type Manifest } from "./manifest.ts";
import { type BinPath, comparePaths, fromUtf8, isWithin, joinRel, show } from "./paths.ts";

const WHITEOUT = ".wh.";
const OPAQUE = ".wh..wh..opq";

/** An image-relative path from a tar entry name; InvalidArgument for one that climbs out. */
export function tarPath(name: string): BinPath {
  const parts = fromUtf8(name)
    .split("/")
    .filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw new InvalidArgumentError(`archive entry ${show(name)} has ".."`);
  return parts.join("/");
}

function parentOf(p: BinPath): BinPath {
  const i = p.lastIndexOf("/");
  return i < 0 ? "" : p.slice(0, i);
}

function baseOf(p: BinPath): BinPath {
  return p.slice(p.lastIndexOf("/") + 1);
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
  private readonly entries = new Map<BinPath, Entry>();
  skipped = 0;

  constructor() {
    this.entries.set("", dirEntry(""));
  }

  /** Applies one layer read from `tar` (uncompressed), storing file contents through `batch`. */
  async apply(tar: Readable, batch: BlobBatch, opts: { whiteouts: boolean }): Promise<void> {
    const added = new Set<BinPath>();
    const ex = extract();
    tar.once("error", (err) => ex.destroy(err));
    tar.pipe(ex as unknown as NodeJS.WritableStream);
    for await (const entry of ex) {
      const h = entry.header;
      const path = tarPath(h.name);
      const name = baseOf(path);
      if (opts.whiteouts && name.startsWith(WHITEOUT)) {
        const dir = parentOf(path);
        if (name === OPAQUE) this.removeUnder(dir, added, false);
        else this.removeUnder(joinRel(dir, name.slice(WHITEOUT.length)), added, true);
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
      this.put(e, added);
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
      if (cur) this.removeUnder(p, new Set(), true); // a non-directory in the way
      chain.push(p);
    }
    const old = this.entries.get(e.path);
    if (old?.type === "dir" && e.type !== "dir") this.removeUnder(e.path, new Set(), true);
    this.entries.set(e.path, e);
    added.add(e.path);
  }

  /** Removes `dir`'s subtree (and `dir` itself when `self`), keeping what `keep` holds. */
  private removeUnder(dir: BinPath, keep: Set<BinPath>, self: boolean): void {
    for (const p of [...this.entries.keys()]) {
      if (p === "" || keep.has(p) || !isWithin(p, dir) || (!self && p === dir)) continue;
      this.entries.delete(p);
    }
  }

  manifest(): Manifest {
    const entries = [...this.entries.values()].sort((a, b) => comparePaths(a.path, b.path));
    return { entries };
  }
}
