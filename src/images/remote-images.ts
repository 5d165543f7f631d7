import { FailedPreconditionError } from "../errors.ts";
import { checkImageId, type ImageStore } from "./image-store.ts";
import type { ImageRemote, TransferOptions, TransferResult } from "./remote.ts";

/**
 * The image service's use of its remote (`serve --registry`), if it has one.
 *
 * Contract:
 * - `fetchMissing` checks the id (InvalidArgument) and, with a remote,
 *   pulls image `id` unless the store has it (any expiry): NotFound when
 *   neither has it. Without a remote it pulls nothing (the store's own
 *   lookups then answer).
 * - `push` and `pull` are FailedPrecondition without a remote; `push`
 *   refuses an image sealed with a customer-supplied key (FailedPrecondition):
 *   those never leave this store.
 * - `imageMade`, `start` and `close` do nothing without a remote.
 */
export class RemoteImages {
  constructor(
    private readonly store: ImageStore,
    readonly remote: ImageRemote | undefined,
  ) {}

  /** Makes sure the store has image `id`, pulling it from the remote when it has none. */
  async fetchMissing(id: string): Promise<void> {
    checkImageId(id);
    if (this.remote && !(await this.store.readMeta(id))) await this.remote.pull(id);
  }

  /** Pushes image `id` to the remote now. */
  async push(id: string, opts: TransferOptions = {}): Promise<TransferResult> {
    checkImageId(id);
    const remote = this.needRemote();
    if (await this.store.sealed.has(id)) {
      throw new FailedPreconditionError(
        `image ${id} is encrypted with a customer-supplied key: encrypted images are never pushed to a registry`,
      );
    }
    return remote.push(id, opts);
  }

  /** Pulls image `id` from the remote unless the store has it. */
  pull(id: string, opts: TransferOptions = {}): Promise<TransferResult> {
    checkImageId(id);
    return this.needRemote().pull(id, opts);
  }

  /** The router made (snapshot) or imported image `id`: the remote gets it in the background. */
  imageMade(id: string): void {
    this.remote?.imageMade(id);
  }

  async start(): Promise<void> {
    await this.remote?.start();
  }

  async close(): Promise<void> {
    await this.remote?.close();
  }

  private needRemote(): ImageRemote {
    if (!this.remote) {
      throw new FailedPreconditionError("this router has no registry (serve --registry)");
    }
    return this.remote;
  }
}
