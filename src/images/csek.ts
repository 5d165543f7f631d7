import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from "node:crypto";
import { inspect } from "node:util";
import { InvalidArgumentError, PermissionDeniedError } from "../errors.ts";

/** Lengths of a customer-supplied encryption key the clients accept (PROTOCOL-LATER §5.7). */
export const CSEK_MIN_BYTES = 16;
export const CSEK_MAX_BYTES = 512;

/** Authenticated encryption of every sealed (CSEK-protected) image: AES-256-GCM. */
export const CIPHER = "aes-256-gcm";
export const TAG_BYTES = 16;
const NONCE_BYTES = 12;
const SALT_BYTES = 32;
const EMPTY = Buffer.alloc(0);

/** A 32-byte key derived from `ikm` with HKDF-SHA256. */
export function derive(ikm: Uint8Array, info: string, salt: Uint8Array = EMPTY): Buffer {
  return Buffer.from(hkdfSync("sha256", ikm, salt, info, 32));
}

/** AES-256-GCM of `data` under `key` with a fresh random nonce: nonce ‖ ciphertext ‖ tag. */
export function sealBytes(key: Uint8Array, data: Uint8Array, aad: string): Buffer {
  const nonce = randomBytes(NONCE_BYTES);
  const c = createCipheriv(CIPHER, key, nonce);
  c.setAAD(Buffer.from(aad));
  const body = Buffer.concat([c.update(data), c.final()]);
  return Buffer.concat([nonce, body, c.getAuthTag()]);
}

/** Opens what `sealBytes` made; undefined when it does not authenticate (wrong key, tampering). */
export function openBytes(key: Uint8Array, sealed: Uint8Array, aad: string): Buffer | undefined {
  if (sealed.length < NONCE_BYTES + TAG_BYTES) return undefined;
  const b = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.length);
  try {
    const d = createDecipheriv(CIPHER, key, b.subarray(0, NONCE_BYTES));
    d.setAAD(Buffer.from(aad));
    d.setAuthTag(b.subarray(b.length - TAG_BYTES));
    return Buffer.concat([d.update(b.subarray(NONCE_BYTES, b.length - TAG_BYTES)), d.final()]);
  } catch {
    return undefined;
  }
}

/** The sealed form of an image's tree (`<images>/sealed/<id>/manifest`), plain JSON around ciphertext. */
interface Envelope {
  format: "taskrouter-sealed-image";
  version: 1;
  cipher: typeof CIPHER;
  kdf: "hkdf-sha256";
  /** Random per image: the key-encryption key is HKDF(CSEK, salt). */
  salt: string;
  /** The image's random data key, sealed with the key-encryption key (base64). */
  key: string;
  /** The canonical manifest, sealed with the data key (base64). */
  tree: string;
}

/**
 * A customer-supplied encryption key, held only for the duration of one
 * call: never stored, logged or echoed. The bytes are a private copy (zeroed
 * by `dispose`), and the object prints and serializes as a placeholder, so
 * a log line or error that includes it by mistake shows nothing of it.
 *
 * What it protects (envelope encryption): each sealed image has a random
 * 256-bit data key (DEK) that encrypts its tree and its file contents; the
 * DEK is stored sealed with a key-encryption key HKDF(CSEK, per-image salt).
 * The image id is a keyed hash of the tree, HMAC(HKDF(CSEK), manifest), so
 * the same tree with the same key gives the same id, and without the key the
 * id reveals nothing of the tree.
 */
export class Csek {
  readonly #key: Buffer;

  private constructor(key: Buffer) {
    this.#key = key;
  }

  /** The key of a request, or undefined when none was sent; InvalidArgument outside 16-512 bytes. */
  static from(raw: Uint8Array | undefined): Csek | undefined {
    if (raw === undefined) return undefined;
    if (raw.length < CSEK_MIN_BYTES || raw.length > CSEK_MAX_BYTES) {
      throw new InvalidArgumentError(
        `customer_supplied_encryption_key must be ${CSEK_MIN_BYTES} to ${CSEK_MAX_BYTES} bytes long (got ${raw.length})`,
      );
    }
    return new Csek(Buffer.from(raw));
  }

  /** The id of a sealed image with canonical manifest `canonical`: `im-` + 128 bits of a keyed hash. */
  imageIdOf(canonical: Uint8Array): string {
    const k = derive(this.#key, "taskrouter sealed image id v1");
    return `im-${createHmac("sha256", k).update(canonical).digest("hex").slice(0, 32)}`;
  }

  /** The sealed manifest file of image `id`: `dek` sealed with this key, `canonical` with `dek`. */
  seal(id: string, dek: Uint8Array, canonical: Uint8Array): Buffer {
    const salt = randomBytes(SALT_BYTES);
    const kek = derive(this.#key, "taskrouter sealed image kek v1", salt);
    const env: Envelope = {
      format: "taskrouter-sealed-image",
      version: 1,
      cipher: CIPHER,
      kdf: "hkdf-sha256",
      salt: salt.toString("base64"),
      key: sealBytes(kek, dek, `key:${id}`).toString("base64"),
      tree: sealBytes(dek, canonical, `tree:${id}`).toString("base64"),
    };
    kek.fill(0);
    return Buffer.from(`${JSON.stringify(env)}\n`);
  }

  /**
   * Opens the sealed manifest file of image `id`: its data key and canonical
   * manifest. PermissionDenied when this key does not open it; a plain Error
   * (internal) when the file is malformed or was tampered with.
   */
  open(id: string, file: Uint8Array): { dek: Buffer; canonical: Buffer } {
    let env: Envelope;
    try {
      env = JSON.parse(Buffer.from(file).toString("utf8")) as Envelope;
    } catch {
      throw new Error(`sealed manifest of ${id} is corrupt`);
    }
    if (env.format !== "taskrouter-sealed-image" || env.version !== 1 || env.cipher !== CIPHER) {
      throw new Error(`sealed manifest of ${id} has an unknown format`);
    }
    const kek = derive(
      this.#key,
      "taskrouter sealed image kek v1",
      Buffer.from(env.salt, "base64"),
    );
    const dek = openBytes(kek, Buffer.from(env.key, "base64"), `key:${id}`);
    kek.fill(0);
    if (!dek) {
      throw new PermissionDeniedError(
        `the customer-supplied encryption key does not open image ${id}`,
      );
    }
    const canonical = openBytes(dek, Buffer.from(env.tree, "base64"), `tree:${id}`);
    if (!canonical || this.imageIdOf(canonical) !== id) {
      throw new Error(`sealed manifest of ${id} failed authentication (corrupt or tampered)`);
    }
    return { dek, canonical };
  }

  /** Zeroes the private copy of the key (the end of the call). */
  dispose(): void {
    this.#key.fill(0);
  }

  toJSON(): string {
    return "[customer-supplied key]";
  }

  toString(): string {
    return "[customer-supplied key]";
  }

  [inspect.custom](): string {
    return "[customer-supplied key]";
  }
}
