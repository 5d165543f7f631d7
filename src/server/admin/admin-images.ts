import { create } from "@bufbuild/protobuf";
import { InvalidArgumentError } from "../../errors.ts";
import {
  type CollectGarbageRequest,
  type CollectGarbageResponse,
  CollectGarbageResponseSchema,
  type DeleteImageRequest,
  type DeleteImageResponse,
  DeleteImageResponseSchema,
  type ExportImageRequest,
  type ExportImageResponse,
  ExportImageResponseSchema,
  type Image,
  ImageEntrySchema,
  ImageSchema,
  type ImageTransferProgress,
  ImageTransferProgressSchema,
  ImportFormat,
  type ImportImageRequest,
  type ImportImageResponse,
  ImportImageResponseSchema,
  type InspectImageRequest,
  type InspectImageResponse,
  InspectImageResponseSchema,
  type ListImagesRequest,
  type ListImagesResponse,
  ListImagesResponseSchema,
  type PullImageRequest,
  type PullImageResponse,
  PullImageResponseSchema,
  type PushImageRequest,
  type PushImageResponse,
  PushImageResponseSchema,
} from "../../gen/taskrouter/v1/images_pb.ts";
import type { ImageMeta } from "../../images/image-store.ts";
import { bin } from "../../images/paths.ts";
import type { TransferOptions, TransferProgress, TransferResult } from "../../images/remote.ts";
import type { ImageService } from "../../images/service.ts";
import { clientStream, type ServerDeps, serverStream, unary } from "../transport/call.ts";

function toMsg(images: ImageService, m: ImageMeta): Image {
  return create(ImageSchema, {
    imageId: m.id,
    createdAtMs: BigInt(m.createdAtMs),
    expiresAtMs: BigInt(m.expiresAtMs ?? 0),
    renewsOnUse: m.renew,
    source: m.source,
    entries: BigInt(m.entries),
    files: BigInt(m.files),
    bytes: BigInt(m.bytes),
    users: images.store.usersOf(m.id),
    expired: images.store.expired(m),
    encrypted: m.encrypted === true,
  });
}

function progressMsg(p: TransferProgress, reference = ""): ImageTransferProgress {
  return create(ImageTransferProgressSchema, {
    bytesDone: BigInt(Math.round(p.bytesDone)),
    bytesTotal: BigInt(Math.round(p.bytesTotal)),
    blobsDone: p.blobsDone,
    blobsTotal: p.blobsTotal,
    blobsSkipped: p.blobsSkipped,
    done: p.done,
    reference,
  });
}

/**
 * A push or pull as a stream of progress messages: the newest progress
 * whenever the client takes one (older ones are dropped), then the result.
 */
async function* transferStream(
  run: (opts: TransferOptions) => Promise<TransferResult>,
  signal: AbortSignal,
): AsyncGenerator<ImageTransferProgress> {
  let latest: TransferProgress | undefined;
  let wake: (() => void) | undefined;
  let ended = false;
  const result = run({
    signal,
    onProgress: (p) => {
      latest = p;
      wake?.();
    },
  }).finally(() => {
    ended = true;
    wake?.();
  });
  result.catch(() => undefined);
  for (;;) {
    if (latest && !latest.done) {
      const p = latest;
      latest = undefined;
      yield progressMsg(p);
      continue;
    }
    if (ended) break;
    await new Promise<void>((resolve) => {
      wake = resolve;
    });
    wake = undefined;
  }
  const r = await result;
  yield progressMsg(r, r.reference);
}

/** Handlers of taskrouter.v1.Images (the image store's admin API), one thin adapter per RPC. */
export function imagesService(deps: ServerDeps, images: ImageService) {
  return {
    listImages: unary<ListImagesRequest, ListImagesResponse>(deps, "ListImages", async () =>
      create(ListImagesResponseSchema, {
        images: (await images.list()).map((m) => toMsg(images, m)),
      }),
    ),
    inspectImage: unary<InspectImageRequest, InspectImageResponse>(
      deps,
      "InspectImage",
      async (req) => {
        const { meta, manifest } = await images.inspect(req.imageId);
        const entries = req.includeEntries
          ? manifest.entries.map((e) =>
              create(ImageEntrySchema, {
                path: bin(e.path),
                type: e.type,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                mtimeNs: e.mtimeNs,
                size: BigInt(e.size),
                digest: e.digest ?? "",
                target: bin(e.target ?? ""),
              }),
            )
          : [];
        return create(InspectImageResponseSchema, { image: toMsg(images, meta), entries });
      },
    ),
    deleteImage: unary<DeleteImageRequest, DeleteImageResponse>(
      deps,
      "DeleteImage",
      async (req) => {
        await images.delete(req.imageId);
        return create(DeleteImageResponseSchema);
      },
    ),
    collectGarbage: unary<CollectGarbageRequest, CollectGarbageResponse>(
      deps,
      "CollectGarbage",
      async () => {
        const r = await images.gc();
        return create(CollectGarbageResponseSchema, {
          imagesRemoved: r.imagesRemoved,
          blobsRemoved: BigInt(r.blobsRemoved),
          bytesFreed: BigInt(r.bytesFreed),
        });
      },
    ),
    importImage: clientStream<ImportImageRequest, ImportImageResponse>(
      deps,
      "ImportImage",
      async (reqs, signal) => {
        const it = reqs[Symbol.asyncIterator]();
        const first = await it.next();
        const header = first.done ? undefined : first.value.part;
        if (header?.case !== "header") {
          throw new InvalidArgumentError("ImportImage: the first message must be the header");
        }
        const h = header.value;
        if (h.format !== ImportFormat.ARCHIVE && h.format !== ImportFormat.TREE) {
          throw new InvalidArgumentError("ImportImage: format must be ARCHIVE or TREE");
        }
        async function* data(): AsyncGenerator<Uint8Array> {
          for (;;) {
            const n = await it.next();
            if (n.done) return;
            if (n.value.part.case !== "data") {
              throw new InvalidArgumentError("ImportImage: only data may follow the header");
            }
            yield n.value.part.value;
          }
        }
        const imageId = await images.importStream(data(), {
          format: h.format === ImportFormat.TREE ? "tree" : "archive",
          ttlSeconds: h.ttlSeconds,
          source: h.source || "import",
          signal,
        });
        return create(ImportImageResponseSchema, { imageId });
      },
    ),
    exportImage: serverStream<ExportImageRequest, ExportImageResponse>(
      deps,
      "ExportImage",
      async function* (req, ctx) {
        const exp = await images.exportImage(req.imageId, ctx.signal);
        yield create(ExportImageResponseSchema, {
          part: { case: "totalBytes", value: BigInt(exp.totalBytes) },
        });
        for await (const chunk of exp.chunks) {
          yield create(ExportImageResponseSchema, { part: { case: "data", value: chunk } });
        }
      },
    ),
    pushImage: serverStream<PushImageRequest, PushImageResponse>(
      deps,
      "PushImage",
      async function* (req, ctx) {
        const run = (o: TransferOptions) => images.pushImage(req.imageId, o);
        for await (const progress of transferStream(run, ctx.signal)) {
          yield create(PushImageResponseSchema, { progress });
        }
      },
    ),
    pullImage: serverStream<PullImageRequest, PullImageResponse>(
      deps,
      "PullImage",
      async function* (req, ctx) {
        const run = (o: TransferOptions) => images.pullImage(req.imageId, o);
        for await (const progress of transferStream(run, ctx.signal)) {
          yield create(PullImageResponseSchema, { progress });
        }
      },
    ),
  };
}
