import { createHash } from "node:crypto";
import { InvalidArgumentError } from "../../errors.ts";
import {
  decodeManifest,
  type Entry,
  encodeManifest,
  imageIdOf,
  type Manifest,
} from "../manifest.ts";
import { OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST } from "../oci-export.ts";

/**
 * How an image of ours is laid out as an OCI image in a registry (see
 * docs/DECISIONS.md, "Images in a registry"):
 *
 * - layers 0..n-1: the image's regular files, in canonical order, cut into
 *   groups (a cut after a file whose path hashes to 0 mod GROUP_ODDS, or once
 *   a group holds GROUP_BYTES): a changed file changes its group's layer
 *   only, so unchanged groups are already in the registry and never sent
 *   again. Cuts depend on paths, so adding or removing files moves no cut
 *   elsewhere.
 * - the last layer: every directory and symlink (on top, so a runtime that
 *   unpacks the layers gets the directories' modes and owners right).
 * - the config: a standard OCI image config plus `io.taskrouter.image`: our
 *   canonical tree (the exact bytes the image id is the hash of, with
 *   nanosecond mtimes and non-UTF-8 names that tar cannot carry) and the
 *   number of files in each file layer.
 * - the manifest: an OCI image manifest, tagged with the image id.
 */

/** A group is cut after a file whose path hash is 0 mod this (about 1 cut in 256 files). */
const GROUP_ODDS = 256;
/** ... and once it holds this many bytes. */
const GROUP_BYTES = 64 * 1024 * 1024;

/** The config field holding what only taskrouter reads. */
export const CONFIG_KEY = "io.taskrouter.image";

/** What `CONFIG_KEY` holds. */
export interface TreeInfo {
  /** The image id (`im-...`). */
  id: string;
  /** Files in each file layer, in layer order. */
  groups: number[];
  /** The canonical manifest, as a string (its UTF-8 bytes hash to the id). */
  tree: string;
}

/** The file groups of an image: one array of file entries per file layer. */
export function fileGroups(m: Manifest): Entry[][] {
  const groups: Entry[][] = [];
  let cur: Entry[] = [];
  let bytes = 0;
  for (const e of m.entries) {
    if (e.type !== "file") continue;
    cur.push(e);
    bytes += e.size;
    const h = createHash("sha256").update(Buffer.from(e.path, "latin1")).digest();
    if (h.readUInt32BE(0) % GROUP_ODDS === 0 || bytes >= GROUP_BYTES) {
      groups.push(cur);
      cur = [];
      bytes = 0;
    }
  }
  if (cur.length > 0) groups.push(cur);
  return groups;
}

/** The entries of the last layer: directories (but the root) and symlinks. */
export function treeEntries(m: Manifest): Entry[] {
  return m.entries.filter((e) => e.path !== "" && e.type !== "file");
}

/** A key for a layer's entries: equal keys give equal layer bytes (see writeLayer). */
export function layerKey(entries: Entry[]): string {
  const h = createHash("sha256");
  for (const e of entries) {
    h.update(
      JSON.stringify([
        Buffer.from(e.path, "latin1").toString("base64"),
        e.type,
        e.mode,
        e.uid,
        e.gid,
        (e.mtimeNs / 1_000_000_000n).toString(),
        e.size,
        e.digest ?? "",
        Buffer.from(e.target ?? "", "latin1").toString("base64"),
      ]),
    );
  }
  return h.digest("hex");
}

export interface OciDescriptor {
  mediaType?: string;
  digest: string;
  size: number;
}

export interface OciManifest {
  schemaVersion?: number;
  mediaType?: string;
  config: OciDescriptor;
  layers: OciDescriptor[];
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;

/** The error of a registry's answer that is not an image of ours (or is hostile). */
export function badImageError(ref: string, why: string): InvalidArgumentError {
  return new InvalidArgumentError(`${ref} is not a taskrouter image: ${why}`);
}

/** Throws badImageError. */
export function badImage(ref: string, why: string): never {
  throw badImageError(ref, why);
}

/** Parses and checks an OCI image manifest of ours from the registry. */
export function parseOciManifest(bytes: Buffer, ref: string): OciManifest {
  let doc: OciManifest;
  try {
    doc = JSON.parse(bytes.toString("utf8")) as OciManifest;
  } catch {
    return badImage(ref, "its manifest is not JSON");
  }
  if (doc.mediaType !== undefined && doc.mediaType !== OCI_MANIFEST) {
    badImage(ref, `manifest media type ${JSON.stringify(doc.mediaType)}`);
  }
  const ok = (d: OciDescriptor | undefined) =>
    d !== undefined && DIGEST.test(d.digest) && Number.isSafeInteger(d.size) && d.size >= 0;
  if (!ok(doc.config) || doc.config.mediaType !== OCI_CONFIG) badImage(ref, "bad config");
  if (!Array.isArray(doc.layers) || doc.layers.length === 0 || !doc.layers.every(ok)) {
    badImage(ref, "bad layers");
  }
  if (doc.layers.some((l) => l.mediaType !== OCI_LAYER_TAR)) badImage(ref, "compressed layers");
  return doc;
}

/**
 * Parses the config blob of image `id`: checks that its tree hashes to the
 * id, that it is canonical, and that its groups match `layers` (file layers
 * plus the tree layer). Returns the tree and the file entries of each layer.
 */
export function parseConfig(
  bytes: Buffer,
  id: string,
  layers: number,
  ref: string,
): { manifest: Manifest; groups: Entry[][] } {
  // The bytes are the registry's to choose until the tree inside checks out: values outside
  // strings are what JSON.parse expands (an array of 100M tiny objects takes gigabytes), and a
  // real config has a few per layer (its tree is one string).
  const most = 16 * layers + 1024;
  if (jsonTokens(bytes, most) > most) badImage(ref, `its config holds over ${most} JSON values`);
  let info: Partial<TreeInfo> | undefined;
  try {
    info = (JSON.parse(bytes.toString("utf8")) as Record<string, Partial<TreeInfo>>)[CONFIG_KEY];
  } catch {
    badImage(ref, "its config is not JSON");
  }
  if (!info || typeof info.tree !== "string" || !Array.isArray(info.groups)) {
    return badImage(ref, `its config has no ${CONFIG_KEY}`);
  }
  const treeBytes = Buffer.from(info.tree, "utf8");
  if (info.id !== id || imageIdOf(treeBytes) !== id) badImage(ref, `its tree is not image ${id}`);
  let manifest: Manifest;
  try {
    manifest = decodeManifest(treeBytes);
  } catch (err) {
    return badImage(ref, (err as Error).message);
  }
  if (imageIdOf(encodeManifest(manifest)) !== id) badImage(ref, "its tree is not canonical");
  const files = manifest.entries.filter((e) => e.type === "file");
  const counts = info.groups;
  const total = counts.reduce(
    (n: number, c) => n + (Number.isSafeInteger(c) && c > 0 ? c : NaN),
    0,
  );
  if (total !== files.length || counts.length + 1 !== layers) {
    badImage(ref, "its layers do not match its tree");
  }
  const groups: Entry[][] = [];
  let at = 0;
  for (const c of counts) {
    groups.push(files.slice(at, at + c));
    at += c;
  }
  return { manifest, groups };
}

/** The `CONFIG_KEY` value for image `id`. */
export function treeInfo(id: string, manifest: Manifest, groups: Entry[][]): TreeInfo {
  return {
    id,
    groups: groups.map((g) => g.length),
    tree: encodeManifest(manifest).toString("utf8"),
  };
}

/**
 * The count of `{`, `[`, `,` and `:` outside strings in JSON text `bytes`,
 * counted up to `stop` + 1 at most (a bound on the values JSON.parse would
 * make, read before it runs).
 */
export function jsonTokens(bytes: Uint8Array, stop: number): number {
  let n = 0;
  let inString = false;
  for (let i = 0; i < bytes.length && n <= stop; i++) {
    const c = bytes[i];
    if (inString) {
      if (c === 0x5c)
        i++; // a backslash: the next byte is escaped
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b || c === 0x2c || c === 0x3a) n++;
  }
  return n;
}
