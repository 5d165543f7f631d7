import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";

/** At most this much of a decoder's error message is passed on (it never holds request bytes). */
const MAX_REASON = 160;

/**
 * What the server's request deserializers return, instead of throwing, for
 * bytes no request message decodes from (random bytes, invalid UTF-8 in a
 * string field, wire-type mismatches, truncated fields, oversized varints).
 * grpc-js answers a throwing deserializer with INTERNAL ("Error deserializing
 * request") before any handler or token check runs; a BadRequest instead
 * reaches the edge interceptor (./edge.ts), which answers INVALID_ARGUMENT,
 * and only once the call's token was accepted.
 */
export class BadRequest {
  constructor(readonly reason: string) {}

  /** The error text for the client. */
  get details(): string {
    return `malformed request message: ${this.reason}`;
  }
}

/**
 * `service` with request deserializers that return a BadRequest instead of
 * throwing (server side only: responses a client cannot decode stay errors).
 */
export function lenientRequests(service: ServiceDefinition): ServiceDefinition {
  const out: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const [name, m] of Object.entries(service)) {
    const decode = m.requestDeserialize;
    out[name] = {
      ...m,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return decode(bytes);
        } catch (err) {
          const reason = err instanceof Error && err.message ? err.message : "cannot decode";
          return new BadRequest(reason.slice(0, MAX_REASON));
        }
      },
    };
  }
  return out;
}
