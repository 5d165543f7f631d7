import { once } from "node:events";
import { create } from "@bufbuild/protobuf";
import type { ClientWritableStream } from "@grpc/grpc-js";
import {
  TaskMountDirectoryRequestSchema,
  TaskSnapshotDirectoryRequestSchema,
  type TaskSnapshotDirectoryResponse,
  TaskSnapshotFilesystemRequestSchema,
  type TaskSnapshotFilesystemResponse,
  TaskUnmountDirectoryRequestSchema,
} from "../gen/modal_proto/task_command_router_pb.ts";
import {
  CollectGarbageRequestSchema,
  type CollectGarbageResponse,
  DeleteImageRequestSchema,
  ExportImageRequestSchema,
  type ExportImageResponse,
  type Image,
  Images,
  type ImageTransferProgress,
  ImportFormat,
  ImportHeaderSchema,
  ImportImageRequestSchema,
  type ImportImageResponse,
  InspectImageRequestSchema,
  type InspectImageResponse,
  ListImagesRequestSchema,
  type ListImagesResponse,
  PullImageRequestSchema,
  type PullImageResponse,
  PushImageRequestSchema,
  type PushImageResponse,
} from "../gen/taskrouter/v1/images_pb.ts";
import type { RouterClient } from "./client.ts";
import { fromServiceError } from "./errors.ts";
import { methodsOf } from "./methods.ts";

/** Options of a snapshot: idempotency key and lifetime (seconds; -1 never; unset 30 days renewed). */
export interface SnapshotOptions {
  snapshotId?: string;
  ttlSeconds?: number | bigint;
  signal?: AbortSignal;
}

/** The `ttl_seconds` the SDKs send when their caller gives none: 30 days. */
const SDK_DEFAULT_TTL_SECONDS = 30 * 24 * 60 * 60;

function pathBytes(path: string | Uint8Array): Uint8Array {
  return typeof path === "string" ? Buffer.from(path) : path;
}

/** The image RPCs of TaskCommandRouter over a RouterClient's channel. */
export class TaskImagesClient {
  constructor(private readonly client: RouterClient) {}

  async mount(taskId: string, path: string | Uint8Array, imageId: string): Promise<void> {
    await this.client.unary(
      "taskMountDirectory",
      create(TaskMountDirectoryRequestSchema, { taskId, path: pathBytes(path), imageId }),
    );
  }

  async unmount(taskId: string, path: string | Uint8Array): Promise<void> {
    await this.client.unary(
      "taskUnmountDirectory",
      create(TaskUnmountDirectoryRequestSchema, { taskId, path: pathBytes(path) }),
    );
  }

  async snapshotDirectory(
    taskId: string,
    path: string | Uint8Array,
    opts: SnapshotOptions = {},
  ): Promise<string> {
    const req = create(TaskSnapshotDirectoryRequestSchema, {
      taskId,
      path: pathBytes(path),
      snapshotId: opts.snapshotId ?? "",
    });
    if (opts.ttlSeconds !== undefined) req.ttlSeconds = BigInt(opts.ttlSeconds);
    const res = await this.client.unary<TaskSnapshotDirectoryResponse>(
      "taskSnapshotDirectory",
      req,
      opts.signal,
    );
    return res.imageId;
  }

  /** `ttl_seconds` is required here (PROTOCOL-LATER §5.7): unset, 30 days, as the SDKs send. */
  async snapshotFilesystem(taskId: string, opts: SnapshotOptions = {}): Promise<string> {
    const req = create(TaskSnapshotFilesystemRequestSchema, {
      taskId,
      snapshotId: opts.snapshotId ?? "",
      ttlSeconds: BigInt(opts.ttlSeconds ?? SDK_DEFAULT_TTL_SECONDS),
    });
    const res = await this.client.unary<TaskSnapshotFilesystemResponse>(
      "taskSnapshotFilesystem",
      req,
      opts.signal,
    );
    return res.imageId;
  }
}

const adminDef = methodsOf(Images);

/** The image store's admin API (taskrouter.v1.Images) over a RouterClient's channel. */
export class ImagesAdminClient {
  constructor(private readonly client: RouterClient) {}

  async list(): Promise<Image[]> {
    const res = await this.client.unary<ListImagesResponse>(
      adminDef("listImages"),
      create(ListImagesRequestSchema),
    );
    return res.images;
  }

  async inspect(imageId: string, includeEntries = false): Promise<InspectImageResponse> {
    return this.client.unary<InspectImageResponse>(
      adminDef("inspectImage"),
      create(InspectImageRequestSchema, { imageId, includeEntries }),
    );
  }

  async delete(imageId: string): Promise<void> {
    await this.client.unary(adminDef("deleteImage"), create(DeleteImageRequestSchema, { imageId }));
  }

  async gc(): Promise<CollectGarbageResponse> {
    return this.client.unary<CollectGarbageResponse>(
      adminDef("collectGarbage"),
      create(CollectGarbageRequestSchema),
    );
  }

  /**
   * Imports an archive (`format` "archive": OCI layout / docker save tar;
   * "tree": tar of a plain directory) sent from `data`, with backpressure.
   * Not retried (the bytes are consumed once). Returns the image id.
   */
  async import(
    data: AsyncIterable<Uint8Array>,
    opts: { format: "archive" | "tree"; ttlSeconds?: number | bigint; source?: string },
  ): Promise<string> {
    const def = adminDef("importImage");
    let call: ClientWritableStream<unknown> | undefined;
    const done = new Promise<ImportImageResponse>((resolve, reject) => {
      call = this.client.grpc.makeClientStreamRequest(
        def.path,
        def.requestSerialize,
        def.responseDeserialize,
        this.client.metadata(),
        {},
        (err, res) => (err ? reject(fromServiceError(err)) : resolve(res as ImportImageResponse)),
      );
    });
    const stream = call as unknown as ClientWritableStream<unknown>;
    const header = create(ImportHeaderSchema, {
      format: opts.format === "tree" ? ImportFormat.TREE : ImportFormat.ARCHIVE,
      source: opts.source ?? "",
    });
    if (opts.ttlSeconds !== undefined) header.ttlSeconds = BigInt(opts.ttlSeconds);
    const write = (msg: unknown) =>
      stream.write(msg) ? Promise.resolve() : once(stream, "drain").then(() => undefined);
    try {
      await write(create(ImportImageRequestSchema, { part: { case: "header", value: header } }));
      for await (const chunk of data) {
        await write(create(ImportImageRequestSchema, { part: { case: "data", value: chunk } }));
      }
      stream.end();
    } catch (err) {
      stream.cancel();
      await done.catch(() => undefined);
      throw err;
    }
    return (await done).imageId;
  }

  /** Streams an image as an OCI archive: first its size, then its bytes. */
  async export(
    imageId: string,
    signal?: AbortSignal,
  ): Promise<{ totalBytes: number; chunks: AsyncGenerator<Buffer> }> {
    const def = adminDef("exportImage");
    const call = this.client.grpc.makeServerStreamRequest(
      def.path,
      def.requestSerialize,
      def.responseDeserialize,
      create(ExportImageRequestSchema, { imageId }),
      this.client.metadata(),
      {},
    );
    signal?.addEventListener("abort", () => call.cancel(), { once: true });
    const it = (call as AsyncIterable<ExportImageResponse>)[Symbol.asyncIterator]();
    let first: IteratorResult<ExportImageResponse>;
    try {
      first = await it.next();
    } catch (err) {
      throw fromServiceError(err);
    }
    if (first.done || first.value.part.case !== "totalBytes") {
      call.cancel();
      throw new Error("ExportImage did not start with the archive's size");
    }
    async function* chunks(): AsyncGenerator<Buffer> {
      try {
        for (;;) {
          const n = await it.next();
          if (n.done) return;
          if (n.value.part.case === "data") {
            const d = n.value.part.value;
            yield Buffer.from(d.buffer, d.byteOffset, d.byteLength);
          }
        }
      } catch (err) {
        throw fromServiceError(err);
      } finally {
        call.cancel();
      }
    }
    return { totalBytes: Number(first.value.part.value), chunks: chunks() };
  }
  /**
   * Pushes an image to the router's registry (`serve --registry`) and waits
   * until the registry has all of it; `onProgress` sees each progress
   * message. Resolves with the last one (its `reference`).
   */
  push(
    imageId: string,
    onProgress?: (p: ImageTransferProgress) => void,
    signal?: AbortSignal,
  ): Promise<ImageTransferProgress> {
    return this.transfer(
      "pushImage",
      create(PushImageRequestSchema, { imageId }),
      onProgress,
      signal,
    );
  }

  /** Pulls an image from the router's registry into its store (nothing when it has it). */
  pull(
    imageId: string,
    onProgress?: (p: ImageTransferProgress) => void,
    signal?: AbortSignal,
  ): Promise<ImageTransferProgress> {
    return this.transfer(
      "pullImage",
      create(PullImageRequestSchema, { imageId }),
      onProgress,
      signal,
    );
  }

  private async transfer(
    method: "pushImage" | "pullImage",
    req: unknown,
    onProgress: ((p: ImageTransferProgress) => void) | undefined,
    signal: AbortSignal | undefined,
  ): Promise<ImageTransferProgress> {
    const def = adminDef(method);
    const call = this.client.grpc.makeServerStreamRequest(
      def.path,
      def.requestSerialize,
      def.responseDeserialize,
      req,
      this.client.metadata(),
      {},
    );
    signal?.addEventListener("abort", () => call.cancel(), { once: true });
    let last: ImageTransferProgress | undefined;
    try {
      for await (const msg of call as AsyncIterable<PushImageResponse | PullImageResponse>) {
        if (!msg.progress) continue;
        last = msg.progress;
        onProgress?.(last);
      }
    } catch (err) {
      throw fromServiceError(err);
    }
    if (!last?.done) throw new Error(`${def.path} ended before the transfer was done`);
    return last;
  }
}
