import { join } from "node:path";
import type { ImageStore } from "./image-store.ts";
import { removeLayerDir } from "./mount-layer.ts";
import type { MountRecord } from "./mount-record.ts";

/**
 * The lifetime of mounts' writable layers (`<dir>/<mount id>/`): a layer and
 * the hold on its image (ImageStore.acquire) outlive their mount while a
 * snapshot reads the layer.
 *
 * Contract:
 * - `remove` removes the layer of a mount that is gone and releases its
 *   image: at once when nothing holds it, else when the last hold ends.
 * - `hold` keeps a mount's layer until the returned function is called
 *   (calling it again does nothing).
 */
export class LayerHolds {
  private readonly holds = new Map<string, { count: number; gone: MountRecord | undefined }>();

  constructor(
    private readonly dir: string,
    private readonly store: Pick<ImageStore, "release">,
  ) {}

  /** The mount `rec` is gone: its layer goes now, or with its last hold. */
  async remove(rec: MountRecord): Promise<void> {
    const held = this.holds.get(rec.id);
    if (held) {
      held.gone = rec; // the last hold removes its layer
      return;
    }
    await this.removeNow(rec);
  }

  private async removeNow(rec: MountRecord): Promise<void> {
    await removeLayerDir(join(this.dir, rec.id));
    if (rec.imageId) this.store.release(rec.imageId);
  }

  /** Keeps the layer of `rec` (and its image); call the returned function when done. */
  hold(rec: MountRecord): () => Promise<void> {
    const h = this.holds.get(rec.id) ?? { count: 0, gone: undefined };
    h.count++;
    this.holds.set(rec.id, h);
    let done = false;
    return async () => {
      if (done) return;
      done = true;
      if (--h.count > 0) return;
      this.holds.delete(rec.id);
      if (h.gone) await this.removeNow(h.gone);
    };
  }
}
