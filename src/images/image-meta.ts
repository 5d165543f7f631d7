import { NotFoundError } from "../errors.ts";
import { checkMaxBytes, MAX, quote } from "../limits.ts";
import { IMAGE_ID, type Manifest } from "./manifest.ts";
import type { SealedOpen } from "./sealed-store.ts";

/** What the store knows about an image besides its tree. */
export interface ImageMeta {
  id: string;
  createdAtMs: number;
  /** When gc may remove it (ms since the epoch); null: never. */
  expiresAtMs: number | null;
  /** True when made without ttl_seconds: every use pushes expiry to now + 30 days. */
  renew: boolean;
  /** Free text: where the image came from ("snapshot task ... path ...", "import ..."). */
  source: string;
  entries: number;
  files: number;
  bytes: number;
  /** Sealed with a customer-supplied key (sealed-store.ts); its counts are then 0 (they are secret). */
  encrypted?: boolean;
}

/** An image opened for a mount: its tree and, for a sealed one, how to decrypt its files. */
export type OpenedImage = { manifest: Manifest } & Partial<Omit<SealedOpen, "manifest">>;

export interface StoreOptions {
  /** The clock (ms since the epoch); tests move it. */
  now?: () => number;
}

/**
 * Checks an image id from a request: InvalidArgument past MAX.imageId bytes,
 * NotFound when it is not of our form (`im-<32 hex>`), so no such image.
 */
export function checkImageId(id: string): void {
  checkMaxBytes("image_id", id, MAX.imageId);
  if (!IMAGE_ID.test(id)) throw new NotFoundError(`image ${quote(id)} not found`);
}
