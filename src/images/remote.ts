/**
 * What the image service needs of a place images are shared through (an OCI
 * registry: src/images/registry/). The service never imports an
 * implementation; the daemon injects one (ImageServiceOptions.remote).
 */

/** Progress of one push or pull; `done` on the last report. */
export interface TransferProgress {
  /** Bytes sent or received so far, and the bytes this transfer has to move. */
  bytesDone: number;
  bytesTotal: number;
  /** Blobs (layers, config, manifest) moved so far and to move. */
  blobsDone: number;
  blobsTotal: number;
  /** Blobs the other side already had, so never moved. */
  blobsSkipped: number;
  done: boolean;
}

/** The outcome of a push or pull: the final progress and where the image is. */
export interface TransferResult extends TransferProgress {
  /** `HOST[:PORT]/REPO:IMAGE_ID`. */
  reference: string;
}

export interface TransferOptions {
  signal?: AbortSignal;
  onProgress?: (p: TransferProgress) => void;
}

/**
 * A remote image store.
 *
 * Contract:
 * - `imageMade` never throws and never waits for the network: the transfer
 *   runs in the background, is retried with backoff until it succeeds or the
 *   image is removed, and failures are logged.
 * - `push` transfers now and resolves when the remote has the whole image
 *   (joining a background push of the same image); it rejects after its
 *   retries (Unavailable), or NotFound when the store has no such image.
 * - `pull` makes image `id` visible in the local store, complete or not at
 *   all: every digest is verified before the image is published. It moves
 *   only what the store lacks, is shared by concurrent callers of the same
 *   id, and rejects with NotFound when the remote does not have the image.
 * - `close` stops background work (transfers in flight are abandoned; their
 *   debris is the store's temporary files, removed at the next start).
 */
export interface ImageRemote {
  /** Where images go, for messages: `HOST[:PORT]/REPO`. */
  readonly name: string;
  /** Called once the store is ready: queues images made earlier but not yet pushed. */
  start(): Promise<void>;
  /** The router made (snapshot) or imported image `id`. */
  imageMade(id: string): void;
  push(id: string, opts?: TransferOptions): Promise<TransferResult>;
  pull(id: string, opts?: TransferOptions): Promise<TransferResult>;
  close(): Promise<void>;
}
