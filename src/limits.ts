import { InvalidArgumentError } from "./errors.ts";

/**
 * The documented maximum lengths of what clients name things with (see
 * docs/DECISIONS.md, "Limits"). Past one: INVALID_ARGUMENT, checked before
 * anything is looked up or kept. Lengths are in bytes (UTF-8 for strings).
 */
export const MAX = {
  /** Task ids: 1-128 characters of [A-Za-z0-9._-] (so also bytes). */
  taskId: 128,
  /** Exec ids (the client's idempotency key of TaskExecStart). */
  execId: 256,
  /** Secret names (and `secret_ids` of an exec): like task ids. */
  secretName: 128,
  /** Image ids; ours are 35 (`im-<32 hex>`), a longer one cannot exist. */
  imageId: 128,
  /** `snapshot_id` idempotency keys of the snapshot RPCs. */
  snapshotId: 256,
  /** `container_id` ("" the main container, else a sidecar's `ctr-…` id). */
  containerId: 128,
  /** Request paths (mount, unmount, snapshot, exec workdir): PATH_MAX - 1. */
  path: 4095,
  /** One component of a request path: NAME_MAX. */
  pathComponent: 255,
} as const;

/** How many characters of a client's value an error message quotes at most. */
export const QUOTE_CHARS = 64;

/** Byte length of a value as it came from the client. */
function byteLength(v: string | Uint8Array): number {
  return typeof v === "string" ? Buffer.byteLength(v) : v.byteLength;
}

/**
 * A short, printable quotation of client input for an error message: JSON
 * quoted, at most QUOTE_CHARS characters of the value; a longer one is cut
 * (`"abc…" (100000 bytes)`). `ends`: keeps its start and its end instead
 * of only its start (paths, whose last components say the most).
 */
export function quote(value: string | Uint8Array, opts: { ends?: boolean } = {}): string {
  const s = typeof value === "string" ? value : Buffer.from(value).toString("utf8");
  if (s.length <= QUOTE_CHARS) return JSON.stringify(s);
  const n = byteLength(value);
  if (opts.ends) {
    const head = Math.floor(QUOTE_CHARS / 3);
    const tail = QUOTE_CHARS - head;
    return `${JSON.stringify(`${s.slice(0, head)}…${s.slice(-tail)}`)} (${n} bytes)`;
  }
  return `${JSON.stringify(`${s.slice(0, QUOTE_CHARS)}…`)} (${n} bytes)`;
}

/**
 * Throws InvalidArgument when `value` is longer than `max` bytes; the message
 * names `field` and the limit, and quotes only the start of the value.
 */
export function checkMaxBytes(field: string, value: string | Uint8Array, max: number): void {
  // A UTF-8 string takes at least one byte per UTF-16 unit and at most three.
  if (typeof value === "string" && value.length * 3 <= max) return;
  const n = byteLength(value);
  if (n > max) {
    throw new InvalidArgumentError(
      `${field} is ${n} bytes, more than the limit of ${max} (${quote(value)})`,
    );
  }
}

const MiB = 1024 * 1024;

/**
 * What an image from outside may make the router read (docs/DECISIONS.md,
 * "Images from outside are bounded"): the answers of a registry (whoever
 * may push to it chooses them) and an admin's ImportImage archive. Past one:
 * INVALID_ARGUMENT (a bad image), nothing stored.
 */
export const IMAGE_INPUT = {
  /**
   * An OCI manifest or index (a registry's, or an archive's index.json and
   * manifest blobs): 4 MiB, what the distribution spec says registries
   * should accept at least (and Debian's registry accepts at most). Ours
   * hold one descriptor per ~256 files.
   */
  manifestBytes: 4 * MiB,
  /**
   * A pulled image's config: it carries the whole tree, ~210 bytes per
   * entry, so 256 MiB is about 1.2 million entries; kept well below V8's
   * longest string (~512 MiB), which the config must become to be parsed.
   */
  configBytes: 256 * MiB,
  /** A registry token service's answer (a token is a few KiB). */
  tokenBytes: 1 * MiB,
  /**
   * Bytes one ImportImage may inflate (gzip: the archive and its layers):
   * 64 GiB, above any real image, so a gzip bomb ends there.
   */
  importInflatedBytes: 64 * 1024 * MiB,
  /** Tar entries one ImportImage may hold (the archive's and all its layers'). */
  importEntries: 2_000_000,
} as const;
