import type { Http2Server } from "node:http2";
import type { DescService } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import type { Metrics } from "../../metrics/metrics.ts";

/** The `/<service>/<method>` paths of `services`: the only method labels counted by name. */
export function methodPaths(services: readonly DescService[]): Set<string> {
  return new Set(services.flatMap((s) => s.methods.map((m) => `/${s.typeName}/${m.name}`)));
}

/**
 * Reports every call on `h2` to `metrics.rpc` when its HTTP/2 stream closes,
 * with the `grpc-status` the server sent (in the trailers, or in the headers
 * of a trailers-only answer), or CANCELLED when it sent none (the client reset
 * the stream first). Counting here, below grpc-js, sees every call: those the
 * edge refuses before any handler runs (UNAUTHENTICATED, INVALID_ARGUMENT),
 * unknown methods (UNIMPLEMENTED) and the health and reflection services.
 * Paths not in `known` are counted as "other", so requests cannot grow the
 * label set.
 */
export function countRpcs(h2: Http2Server, metrics: Metrics, known: ReadonlySet<string>): void {
  h2.on("stream", (stream, headers) => {
    const path = headers[":path"];
    const method = typeof path === "string" && known.has(path) ? path : "other";
    stream.once("close", () => {
      const sent = stream.sentTrailers?.["grpc-status"] ?? stream.sentHeaders?.["grpc-status"];
      const code = sent === undefined ? Number.NaN : Number(sent);
      metrics.rpc(method, Number.isInteger(code) ? code : status.CANCELLED);
    });
  });
}
