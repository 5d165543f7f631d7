import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from "node:crypto";
import { fstat } from "node:fs";
import { rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import type { BlobRef, BlobSink } from "./blob-store.ts";
import { CIPHER, derive, TAG_BYTES } from "./csek.ts";
import {
  BUFFER_SIZE,
  closeFd,
  openFd,
  readFd,
  releaseBuffer,
  takeBuffer,
  writeAll,
} from "./fdio.ts";
import { tmpName } from "./fs-util.ts";

/**
 * File contents of sealed images. A blob file is `TRB1` ‖ a random 16-byte
 * salt ‖ chunks: each 1 MiB of plaintext (the last one shorter, possibly
 * empty) sealed with AES-256-GCM under HKDF(DEK, salt), its 12-byte nonce
 * being a last-chunk flag (4 bytes) and the chunk's index (8 bytes), each
 * followed by its 16-byte tag. The last chunk also authenticates the
 * plaintext's sha256 (as additional data), so chunks cannot be reordered,
 * dropped, truncated or swapped with another file's. Blobs live in their
 * image's own directory, named HMAC(HKDF(DEK), plaintext digest): keyed per
 * image, so no two images ever share a blob (nothing tells an observer that
 * two images hold the same file); identical files of one image share one.
 */
const MAGIC = Buffer.from("TRB1");
const SALT_BYTES = 16;
const HEADER_BYTES = MAGIC.length + SALT_BYTES;
export const CHUNK = BUFFER_SIZE;
const fstatAsync = promisify(fstat);

function chunkNonce(index: number, last: boolean): Buffer {
  const n = Buffer.alloc(12);
  n.writeUInt32BE(last ? 1 : 0, 0);
  n.writeBigUInt64BE(BigInt(index), 4);
  return n;
}

/** The file name of the blob with plaintext `digest` in the image whose data key is `dek`. */
export function blobName(dek: Uint8Array, digest: string): string {
  return createHmac("sha256", derive(dek, "taskrouter sealed blob name v1"))
    .update(digest)
    .digest("hex");
}

/** Reads from `fd` at `pos` until `buf` is full or the file ends; the bytes read. */
async function fill(fd: number, buf: Buffer, len: number, pos: number): Promise<number> {
  let got = 0;
  while (got < len) {
    const n = await readFd(fd, buf.subarray(got), len - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}

/**
 * The blobs of one sealed image being made, in `dir` (a staging directory
 * the store later renames into place with the image's manifest). Same
 * contract as a BlobBatch: nothing is visible before the store publishes.
 */
export class SealedBlobWriter implements BlobSink {
  private readonly names = new Set<string>();

  constructor(
    readonly dir: string,
    private readonly dek: Uint8Array,
  ) {}

  /** Encrypts the open file `fd` (start to end) into a blob; digest and size of the plaintext. */
  async writeFd(fd: number, onBytes?: (n: number) => void): Promise<BlobRef> {
    const salt = randomBytes(SALT_BYTES);
    const key = derive(this.dek, "taskrouter sealed blob v1", salt);
    const tmp = join(this.dir, tmpName("blob"));
    const out = await openFd(tmp, "wx", 0o400);
    const hash = createHash("sha256");
    let cur = takeBuffer();
    let next = takeBuffer();
    let digest = "";
    let pos = 0;
    try {
      await writeAll(out, Buffer.concat([MAGIC, salt]), HEADER_BYTES);
      let len = await fill(fd, cur, CHUNK, 0);
      for (let index = 0; ; index++) {
        hash.update(cur.subarray(0, len));
        pos += len;
        onBytes?.(len);
        const nextLen = len < CHUNK ? 0 : await fill(fd, next, CHUNK, pos);
        const last = nextLen === 0;
        const c = createCipheriv(CIPHER, key, chunkNonce(index, last));
        if (last) {
          digest = `sha256:${hash.digest("hex")}`;
          c.setAAD(Buffer.from(digest));
        }
        const sealed = Buffer.concat([c.update(cur.subarray(0, len)), c.final(), c.getAuthTag()]);
        await writeAll(out, sealed, sealed.length);
        if (last) break;
        [cur, next] = [next, cur];
        len = nextLen;
      }
    } catch (err) {
      await closeFd(out);
      await rm(tmp, { force: true });
      throw err;
    } finally {
      key.fill(0);
      releaseBuffer(cur);
      releaseBuffer(next);
    }
    await closeFd(out);
    const name = blobName(this.dek, digest);
    if (this.names.has(name)) {
      await rm(tmp, { force: true }); // the same content again in this image
    } else {
      this.names.add(name);
      await rename(tmp, join(this.dir, name));
    }
    return { digest, size: pos };
  }
}

/**
 * Decrypts blob file `src` into the open file `out`, checking it against
 * the entry's size and digest; a plain Error (internal) for a blob that was
 * truncated, tampered with or belongs to another file.
 */
export async function decryptBlob(
  src: string,
  dek: Uint8Array,
  e: { size: number; digest: string },
  out: number,
): Promise<void> {
  const fd = await openFd(src, "r");
  const buf = takeBuffer();
  const corrupt = () => new Error(`encrypted blob ${e.digest} failed authentication`);
  try {
    const chunks = Math.max(1, Math.ceil(e.size / CHUNK));
    const st = await fstatAsync(fd);
    if (st.size !== HEADER_BYTES + e.size + chunks * TAG_BYTES) throw corrupt();
    const head = Buffer.alloc(HEADER_BYTES);
    if ((await fill(fd, head, HEADER_BYTES, 0)) !== HEADER_BYTES) throw corrupt();
    if (!head.subarray(0, MAGIC.length).equals(MAGIC)) throw corrupt();
    const key = derive(dek, "taskrouter sealed blob v1", head.subarray(MAGIC.length));
    try {
      let pos = HEADER_BYTES;
      for (let index = 0; index < chunks; index++) {
        const len = Math.min(CHUNK, e.size - index * CHUNK);
        const tag = Buffer.alloc(TAG_BYTES);
        if ((await fill(fd, buf, len, pos)) !== len) throw corrupt();
        if ((await fill(fd, tag, TAG_BYTES, pos + len)) !== TAG_BYTES) throw corrupt();
        pos += len + TAG_BYTES;
        const last = index === chunks - 1;
        const d = createDecipheriv(CIPHER, key, chunkNonce(index, last));
        if (last) d.setAAD(Buffer.from(e.digest));
        d.setAuthTag(tag);
        let plain: Buffer;
        try {
          plain = Buffer.concat([d.update(buf.subarray(0, len)), d.final()]);
        } catch {
          throw corrupt();
        }
        await writeAll(out, plain, plain.length);
      }
    } finally {
      key.fill(0);
    }
  } finally {
    releaseBuffer(buf);
    await closeFd(fd);
  }
}
