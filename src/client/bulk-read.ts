import { Metadata, status } from "@grpc/grpc-js";
import { addonPath, loadAddon } from "../util/addon.ts";

/**
 * Bulk output reads off the event loop (docs/DECISIONS.md, "Bulk reads off
 * the event loop"). Node's HTTP/2 hands JS one event per 16 KiB DATA frame,
 * ~25 µs each: a 256 MiB read costs the client ~0.4 s of main-thread CPU
 * before a byte is used. The addon (native/h2-read.c, its protocol at the
 * top) receives one server-streaming call on a thread of its own, over a
 * connection of its own, and hands JS whole gRPC messages a few MiB at a
 * time; JS decodes them as grpc-js would and sees the same errors.
 */

interface H2ReadAddon {
  open(
    target: string,
    headers: string[],
    body: Uint8Array,
    onEvent: (kind: string, value: unknown) => void,
  ): object;
  ack(handle: object): void;
  close(handle: object): void;
}

/** One streaming call's response messages (decoded); `cancel` ends it early. */
export interface BulkCall<T> extends AsyncIterable<T> {
  cancel(): void;
}

const addon = loadAddon<H2ReadAddon>(addonPath("h2read"));

/** The error a call ended with, shaped as grpc-js's ServiceError (code, details, metadata). */
function callError(code: status, details: string, metadata: Metadata): Error {
  return Object.assign(new Error(`${code} ${status[code]}: ${details}`), {
    code,
    details,
    metadata,
  });
}

/** The gRPC status of a call from its response header fields, as grpc-js derives it. */
function statusOf(
  fields: string[],
  error: string | null,
  rst: number,
): { code: status; details: string } {
  if (error === "closed") return { code: status.CANCELLED, details: "Cancelled on client" };
  const get = (name: string) => {
    for (let i = fields.length - 2; i >= 0; i -= 2) if (fields[i] === name) return fields[i + 1];
    return undefined;
  };
  const grpcStatus = get("grpc-status");
  const http = get(":status");
  if (http !== undefined && http !== "200" && grpcStatus === undefined) {
    // Not a gRPC answer (a proxy's error page): its body is not read as messages.
    const byHttp: Record<string, status> = {
      "400": status.INTERNAL,
      "401": status.UNAUTHENTICATED,
      "403": status.PERMISSION_DENIED,
      "404": status.UNIMPLEMENTED,
      "429": status.UNAVAILABLE,
      "502": status.UNAVAILABLE,
      "503": status.UNAVAILABLE,
      "504": status.UNAVAILABLE,
    };
    return { code: byHttp[http] ?? status.UNKNOWN, details: `HTTP status ${http}` };
  }
  if (error === "cannot connect" || error === "connection lost") {
    return { code: status.UNAVAILABLE, details: error };
  }
  if (error === "message larger than 128 MiB") {
    return { code: status.RESOURCE_EXHAUSTED, details: error };
  }
  if (error !== null) return { code: status.INTERNAL, details: error };
  if (grpcStatus !== undefined) {
    const code = Number(grpcStatus);
    const message = get("grpc-message") ?? "";
    let details = message;
    try {
      details = decodeURIComponent(message);
    } catch {}
    return Number.isInteger(code) && code >= 0 && code <= 16
      ? { code, details }
      : { code: status.UNKNOWN, details: `bad grpc-status ${grpcStatus}` };
  }
  if (rst !== 0) {
    const byRst: Record<number, status> = {
      7: status.UNAVAILABLE,
      8: status.CANCELLED,
      11: status.RESOURCE_EXHAUSTED,
      12: status.PERMISSION_DENIED,
    };
    return { code: byRst[rst] ?? status.INTERNAL, details: `stream reset (HTTP/2 code ${rst})` };
  }
  return { code: status.INTERNAL, details: "Call ended without gRPC status" };
}

/** Where the addon connects for a grpc-js address it can serve, or undefined. */
function targetOf(address: string): string | undefined {
  return /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(address) ? address : undefined;
}

/**
 * Opens server-streaming calls on the addon for one plaintext router
 * address. `forAddress` gives undefined (the caller uses grpc-js) when the
 * addon is not built or cannot be loaded, or the address is not a plain
 * `host:port` (the router listens on TCP only).
 */
export class BulkReader {
  private closed = false;

  private constructor(
    private readonly native: H2ReadAddon,
    private readonly target: string,
  ) {}

  static forAddress(address: string): BulkReader | undefined {
    const target = targetOf(address);
    if (!("exports" in addon) || target === undefined) return undefined;
    return new BulkReader(addon.exports, target);
  }

  /**
   * Starts the call `path` with `request` (one serialized message) and
   * `metadata` (string values; `-bin` values base64). Its messages are
   * decoded with `decode`; it throws, like grpc-js's streams, an error with
   * the call's status `code` and `details`.
   */
  call<T>(
    path: string,
    metadata: Metadata,
    request: Uint8Array,
    decode: (b: Uint8Array) => T,
  ): BulkCall<T> {
    // As grpc-js's closed channel: no new call (calls under way run to their end).
    if (this.closed) throw new Error("Channel has been shut down");
    const headers = [":method", "POST", ":scheme", "http", ":path", path];
    headers.push(":authority", this.target);
    headers.push("content-type", "application/grpc", "te", "trailers");
    headers.push("user-agent", "taskrouter-bulk-read");
    for (const [k, v] of Object.entries(metadata.getMap())) {
      headers.push(k, typeof v === "string" ? v : Buffer.from(v).toString("base64"));
    }
    const body = Buffer.alloc(5 + request.length);
    body.writeUInt32BE(request.length, 1);
    body.set(request, 5);

    const chunks: ArrayBuffer[] = [];
    let end: { code: status; details: string } | undefined;
    let wake: (() => void) | undefined;
    const handle = this.native.open(this.target, headers, body, (kind, value) => {
      if (kind === "data") chunks.push(value as ArrayBuffer);
      else {
        const [fields, error, rst] = value as [string[], string | null, number];
        end = statusOf(fields, error, rst);
      }
      wake?.();
    });
    const native = this.native;
    let cancelled = false;
    const cancel = () => {
      cancelled = true;
      native.close(handle);
      wake?.();
    };

    async function* messages(): AsyncGenerator<T> {
      try {
        for (;;) {
          if (cancelled) throw callError(status.CANCELLED, "Cancelled on client", new Metadata());
          const chunk = chunks.shift();
          if (chunk === undefined) {
            if (end !== undefined) {
              if (end.code === status.OK) return;
              throw callError(end.code, end.details, new Metadata());
            }
            await new Promise<void>((resolve) => {
              wake = resolve;
            });
            wake = undefined;
            continue;
          }
          const view = new DataView(chunk);
          for (let at = 0; at < chunk.byteLength; ) {
            const len = view.getUint32(at + 1);
            let message: T;
            try {
              message = decode(new Uint8Array(chunk, at + 5, len));
            } catch (err) {
              cancel();
              const why = `Response message parsing error: ${(err as Error).message}`;
              throw callError(status.INTERNAL, why, new Metadata());
            }
            yield message;
            at += 5 + len;
          }
          native.ack(handle);
        }
      } finally {
        if (end === undefined) cancel();
      }
    }
    const it = messages();
    return { [Symbol.asyncIterator]: () => it, cancel };
  }

  /** Refuses new calls, as closing a grpc-js channel does; calls under way run to their end. */
  close(): void {
    this.closed = true;
  }
}
