import { createHash } from "node:crypto";
import { type BinPath, comparePaths, fromUtf8, isWithin, toUtf8 } from "./paths.ts";

export type EntryType = "dir" | "file" | "symlink";

/**
 * One entry of an image's tree. `path` is relative to the image root ("" is
 * the root directory itself). Files carry `size` and the sha256 `digest` of
 * their content (`sha256:<hex>`, a blob of the store); symlinks carry their
 * `target` (never followed). `mode` is the permission bits (& 0o7777).
 */
export interface Entry {
  path: BinPath;
  type: EntryType;
  mode: number;
  uid: number;
  gid: number;
  /** Modification time, nanoseconds since the Unix epoch. */
  mtimeNs: bigint;
  size: number;
  digest?: string;
  target?: BinPath;
}

/**
 * An image's tree: entries in canonical order (depth-first, siblings in byte
 * order, the root first). Its canonical JSON bytes are what the image id is
 * derived from, so the same tree always gives the same id.
 */
export interface Manifest {
  entries: Entry[];
}

const VERSION = 1;
const DIGEST = /^sha256:[0-9a-f]{64}$/;
export const IMAGE_ID = /^im-[0-9a-f]{32}$/;

function pathField(obj: Record<string, unknown>, key: string, p: BinPath): void {
  const s = toUtf8(p);
  if (s !== undefined) obj[key] = s;
  else obj[`${key}_b64`] = Buffer.from(p, "latin1").toString("base64");
}

/** The canonical bytes of a manifest (entries are sorted first). */
export function encodeManifest(m: Manifest): Buffer {
  const entries = [...m.entries].sort((a, b) => comparePaths(a.path, b.path));
  const lines = entries.map((e) => {
    const o: Record<string, unknown> = {};
    pathField(o, "path", e.path);
    o.type = e.type;
    o.mode = e.mode;
    o.uid = e.uid;
    o.gid = e.gid;
    o.mtime_ns = e.mtimeNs.toString();
    if (e.type === "file") {
      o.size = e.size;
      o.digest = e.digest;
    }
    if (e.type === "symlink") pathField(o, "target", e.target ?? "");
    return JSON.stringify(o);
  });
  return Buffer.from(`{"version":${VERSION},"entries":[\n${lines.join(",\n")}\n]}\n`);
}

/** The image id of canonical manifest bytes: `im-` + the first 128 bits of their sha256. */
export function imageIdOf(canonical: Uint8Array): string {
  return `im-${createHash("sha256").update(canonical).digest("hex").slice(0, 32)}`;
}

function readPath(o: Record<string, unknown>, key: string): BinPath {
  const s = o[key];
  if (typeof s === "string") return fromUtf8(s);
  const b = o[`${key}_b64`];
  if (typeof b === "string") return Buffer.from(b, "base64").toString("latin1");
  throw new Error(`manifest entry without ${key}`);
}

function int(o: Record<string, unknown>, key: string): number {
  const v = o[key];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw new Error(`manifest entry with a bad ${key}`);
  }
  return v;
}

/** Parses manifest bytes written by encodeManifest; throws on anything malformed. */
export function decodeManifest(bytes: Uint8Array): Manifest {
  const doc = JSON.parse(Buffer.from(bytes).toString("utf8")) as {
    version?: unknown;
    entries?: unknown;
  };
  if (doc.version !== VERSION || !Array.isArray(doc.entries)) {
    throw new Error("not a taskrouter image manifest (version 1)");
  }
  const entries = (doc.entries as Record<string, unknown>[]).map((o): Entry => {
    const type = o.type;
    if (type !== "dir" && type !== "file" && type !== "symlink") {
      throw new Error("manifest entry with a bad type");
    }
    const e: Entry = {
      path: readPath(o, "path"),
      type,
      mode: int(o, "mode") & 0o7777,
      uid: int(o, "uid"),
      gid: int(o, "gid"),
      mtimeNs: BigInt(String(o.mtime_ns)),
      size: type === "file" ? int(o, "size") : 0,
    };
    if (type === "file") {
      if (typeof o.digest !== "string" || !DIGEST.test(o.digest)) {
        throw new Error("manifest file entry with a bad digest");
      }
      e.digest = o.digest;
    }
    if (type === "symlink") e.target = readPath(o, "target");
    return e;
  });
  if (entries[0]?.path !== "" || entries[0].type !== "dir") {
    throw new Error("manifest does not start with its root directory");
  }
  checkTree(entries);
  return { entries };
}

/**
 * Throws unless `entries` (after the root) form a tree that stays inside its
 * root: each path's components are neither empty, `.` nor `..`, and hold no
 * NUL; no path is listed twice; each entry's parent is a directory listed
 * before it (so nothing is ever made through a symlink). A manifest can come
 * from a registry, where anyone who may push chooses it (and its id, the hash
 * of the list): unpacked as root, `../x` or `link/x` would land anywhere.
 */
function checkTree(entries: readonly Entry[]): void {
  const dirs = new Set<BinPath>([""]);
  const seen = new Set<BinPath>([""]);
  for (const e of entries.slice(1)) {
    const parts = e.path.split("/");
    if (parts.some((c) => c === "" || c === "." || c === ".." || c.includes("\0"))) {
      throw new Error("manifest entry with a path that is not a plain relative path");
    }
    if (seen.has(e.path)) throw new Error("manifest lists a path twice");
    const slash = e.path.lastIndexOf("/");
    if (!dirs.has(slash < 0 ? "" : e.path.slice(0, slash))) {
      throw new Error("manifest entry whose parent is not a directory listed before it");
    }
    seen.add(e.path);
    if (e.type === "dir") dirs.add(e.path);
  }
}

/** Index of a manifest by path, with subtree ranges (entries are in canonical order). */
export class ManifestIndex {
  private readonly byPath = new Map<BinPath, number>();

  constructor(readonly manifest: Manifest) {
    manifest.entries.forEach((e, i) => {
      this.byPath.set(e.path, i);
    });
  }

  get(path: BinPath): Entry | undefined {
    const i = this.byPath.get(path);
    return i === undefined ? undefined : this.manifest.entries[i];
  }

  /** The entry at `path` and everything under it, in canonical order. */
  subtree(path: BinPath): Entry[] {
    const start = this.byPath.get(path);
    if (start === undefined) return [];
    const all = this.manifest.entries;
    let end = start + 1;
    while (end < all.length && isWithin((all[end] as Entry).path, path)) end++;
    return all.slice(start, end);
  }
}

/** Totals of a manifest: regular files, their bytes, and every distinct blob digest. */
export function manifestStats(m: Manifest): { files: number; bytes: number; blobs: Set<string> } {
  let files = 0;
  let bytes = 0;
  const blobs = new Set<string>();
  for (const e of m.entries) {
    if (e.type !== "file" || !e.digest) continue;
    files++;
    bytes += e.size;
    blobs.add(e.digest);
  }
  return { files, bytes, blobs };
}

/** A manifest with only a root directory (what `image_id` "" mounts). */
export function emptyManifest(mtimeNs = 0n): Manifest {
  return { entries: [dirEntry("", mtimeNs)] };
}

/** A plain directory entry: root-owned, mode 755. */
export function dirEntry(path: BinPath, mtimeNs = 0n): Entry {
  return { path, type: "dir", mode: 0o755, uid: 0, gid: 0, mtimeNs, size: 0 };
}
