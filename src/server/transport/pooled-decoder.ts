import {
  type MethodDefinition,
  ServerInterceptingCall,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  type ServiceDefinition,
} from "@grpc/grpc-js";
import type { Logger } from "pino";
import { TaskCommandRouter } from "../../gen/modal_proto/task_command_router_pb.ts";
import { lendView } from "../../util/chunk-pool.ts";
import { MessagePool } from "../../util/message-pool.ts";
import { YoungCollector } from "../../util/young-gc.ts";

/**
 * Stdin requests assembled into reused buffers. grpc-js joins every request
 * message into a fresh buffer (`Buffer.concat` of its HTTP/2 pieces): for a
 * 16 MiB stdin write that is 16 MiB of fresh memory per call, and the
 * churn kept V8's full collections busy (BENCHMARKS.md, "Receiving without
 * fresh buffers"). For the methods below, the call's decoder is replaced by
 * a PooledDecoder, which joins the pieces into a buffer from the process's
 * MessagePool; the request's `data` then views that buffer, and
 * whoever wrote the bytes on gives it back with `recycle(data)`
 * (src/util/chunk-pool.ts; src/exec/stdin.ts does, once the pipe took
 * them). A request that is not recycled leaves its buffer to the GC.
 *
 * grpc-js has no API for it: the decoder is a private field of the call's
 * innermost object, replaced from a server interceptor before a byte of the
 * body is read, and checked by shape. When it is not found the call keeps
 * grpc-js's decoder (a warning, once); test/pooled-decoder.test.ts fails
 * when a grpc-js upgrade loses the fast path.
 */

const SERVICE = `/${TaskCommandRouter.typeName}/`;

/** Where each pooled method's request keeps its stdin bytes. */
const DATA_OF: Record<string, (req: unknown) => unknown> = {
  [`${SERVICE}TaskExecStdinWrite`]: (req) => (req as { data?: unknown }).data,
  [`${SERVICE}SandboxStdinWriteV2`]: (req) => (req as { data?: unknown }).data,
  [`${SERVICE}TaskExecStdinWriteStream`]: (req) => {
    const p = (req as { payload?: { case?: string; value?: unknown } }).payload;
    return p?.case === "data" ? p.value : undefined;
  },
};

/** The pool of every server in this process (a process serves one router). */
export const requestPool = new MessagePool();

/** Messages smaller than this are joined as grpc-js does (a small fresh buffer). */
const POOL_FROM = 64 * 1024;
/**
 * Messages up to this size get their buffer when their header came and are
 * filled as their bytes come (the HTTP/2 pieces are then garbage at once,
 * while still young), as long as the process's FillBudget allows; larger
 * ones (up to the receive limit), and any beyond the budget, are joined
 * once all of them came, as grpc-js does. Announced sizes alone thus hold
 * at most the budget, across all calls.
 */
const FILL_FROM_MAX = 32 * 1024 * 1024;
/** Bytes all calls in this process may hold for messages announced but not yet complete. */
const FILL_BUDGET = 128 * 1024 * 1024;
/**
 * The HTTP/2 read buffers the pieces came in are garbage once copied: a
 * young collection per this many bytes received frees them (src/util/young-gc.ts).
 * Not more: right after a scavenge V8 still counts the dead buffers it found as
 * external memory, and with 8 MiB of them that reached the old generation's
 * margin, so every scavenge started a full collection (docs/DECISIONS.md,
 * "Stdin without copies on either side", stop 31).
 */
const COLLECT_EVERY = 4 * 1024 * 1024;
/** The process's collector for the bytes pooled methods received (exported for tests). */
export const received = new YoungCollector(COLLECT_EVERY);

/** What messages announced but not yet complete may hold, across calls. */
export class FillBudget {
  constructor(private left = FILL_BUDGET) {}

  /** Reserves `n` bytes; false (nothing reserved) when the budget has less left. */
  take(n: number): boolean {
    if (n > this.left) return false;
    this.left -= n;
    return true;
  }

  give(n: number): void {
    this.left += n;
  }
}

const fillBudget = new FillBudget();

/** The part of grpc-js's StreamDecoder that its calls use. */
interface Decoder {
  write(data: Buffer): Buffer[];
}

/** Buffers taken for a message and not yet claimed by the request decoded from it. */
const assembled = new WeakMap<ArrayBufferLike, Buffer>();

/**
 * gRPC message framing (flag byte, 4-byte big-endian length, message) cut
 * out of a call's HTTP/2 data, as grpc-js's StreamDecoder does: `write`
 * returns the messages completed by `data`, each whole with its 5-byte
 * prefix, and throws past `maxBytes` (-1: no limit). A message of at least
 * POOL_FROM bytes is joined into a buffer from `pool`: filled as it comes
 * up to FILL_FROM_MAX bytes, joined at the end beyond.
 */
export class PooledDecoder implements Decoder {
  private readonly head = Buffer.alloc(5);
  private headBytes = 0;
  private size = 0;
  private missing = 0;
  /** The message's pooled buffer, filled as the bytes come (sizes POOL_FROM..FILL_FROM_MAX). */
  private target: Buffer | undefined;
  private filled = 0;
  /** The pieces of a message joined only once all of it came. */
  private parts: Buffer[] = [];

  constructor(
    private readonly maxBytes: number,
    private readonly pool: MessagePool,
    private readonly budget = new FillBudget(),
  ) {}

  /** The call ended: gives back what a message still in progress reserved. */
  abandon(): void {
    this.budget.give(this.target?.length ?? 0);
    this.target = undefined;
    this.parts = [];
  }

  write(data: Buffer): Buffer[] {
    received.add(data.length);
    const out: Buffer[] = [];
    let pos = 0;
    while (pos < data.length) {
      if (this.headBytes < 5) {
        const n = Math.min(5 - this.headBytes, data.length - pos);
        data.copy(this.head, this.headBytes, pos, pos + n);
        this.headBytes += n;
        pos += n;
        if (this.headBytes < 5) break;
        this.size = this.head.readUInt32BE(1);
        if (this.maxBytes !== -1 && this.size > this.maxBytes) {
          throw new Error(`Received message larger than max (${this.size} vs ${this.maxBytes})`);
        }
        this.missing = this.size;
        const fill = this.size >= POOL_FROM && this.size <= FILL_FROM_MAX;
        // `target` holds exactly what it reserved (5 + size bytes) until given back.
        if (fill && this.budget.take(5 + this.size)) {
          this.target = this.pooled(5 + this.size);
          this.filled = this.head.copy(this.target, 0);
        }
        if (this.missing === 0) out.push(this.finish());
        continue;
      }
      const n = Math.min(this.missing, data.length - pos);
      // Copied at once into the target: the HTTP/2 buffers die young (a cheap collection).
      if (this.target) this.filled += data.copy(this.target, this.filled, pos, pos + n);
      else this.parts.push(data.subarray(pos, pos + n));
      this.missing -= n;
      pos += n;
      if (this.missing === 0) out.push(this.finish());
    }
    return out;
  }

  private finish(): Buffer {
    let msg = this.target;
    this.target = undefined;
    this.budget.give(msg?.length ?? 0);
    if (!msg) {
      const total = 5 + this.size;
      msg = this.size >= POOL_FROM ? this.pooled(total) : Buffer.allocUnsafe(total);
      let at = this.head.copy(msg, 0);
      for (const p of this.parts) at += p.copy(msg, at);
      this.parts = [];
    }
    this.headBytes = 0;
    return msg;
  }

  /** `n` bytes of a buffer from the pool, recorded for the request deserializer. */
  private pooled(n: number): Buffer {
    const buf = this.pool.take(n);
    assembled.set(buf.buffer, buf);
    return buf.subarray(0, n);
  }
}

/**
 * The server interceptor that gives each call of a pooled method a
 * PooledDecoder over `requestPool` and the process's FillBudget; other
 * calls pass untouched.
 */
export function pooledDecoding(log: Logger): ServerInterceptor {
  let warned = false;
  return (method, call) => {
    if (!(method.path in DATA_OF)) {
      // No layer of its own: grpc-js only uses the call's interface (the type asks for its class).
      return call as ServerInterceptingCall;
    }
    const decoder = installDecoder(call, requestPool, fillBudget);
    if (!decoder) {
      if (!warned)
        log.warn("grpc-js internals changed: stdin requests are joined into fresh buffers");
      warned = true;
      return call as ServerInterceptingCall;
    }
    // However the call ends, what its unfinished message reserved goes back to the budget
    // (grpc-js calls onCancel also after a status; the status hook covers an early answer).
    return new ServerInterceptingCall(call, {
      start: (next) => next({ onCancel: () => decoder.abandon() }),
      sendStatus: (status, next) => {
        decoder.abandon();
        next(status);
      },
    });
  };
}

/** Replaces the decoder of `call`'s innermost (grpc-js-private) object; undefined if not found. */
function installDecoder(
  call: ServerInterceptingCallInterface,
  pool: MessagePool,
  budget: FillBudget,
): PooledDecoder | undefined {
  let base = call as unknown as {
    nextCall?: unknown;
    decoder?: Partial<Decoder> & { readState?: unknown };
    maxReceiveMessageSize?: unknown;
  };
  while (base.nextCall) base = base.nextCall as typeof base;
  const { decoder, maxReceiveMessageSize: max } = base;
  // Only a decoder that has read nothing yet (grpc-js's NO_DATA state is 0).
  if (typeof decoder?.write !== "function" || decoder.readState !== 0) return undefined;
  if (typeof max !== "number") return undefined;
  const ours = new PooledDecoder(max, pool, budget);
  base.decoder = ours;
  return ours;
}

/**
 * `service` with the request deserializers of pooled methods handing their
 * message's buffer on: to the request's `data` (recycle(data) gives it back
 * to the pool), or straight back to the pool when nothing of the request
 * views it. A request with unknown fields (protobuf-es keeps them as views
 * of the buffer) leaves it to the GC.
 */
export function pooledRequests(service: ServiceDefinition, pool = requestPool): ServiceDefinition {
  const out: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const [name, m] of Object.entries(service)) {
    const dataOf = DATA_OF[m.path];
    const decode = m.requestDeserialize;
    out[name] = !dataOf
      ? m
      : {
          ...m,
          requestDeserialize: (bytes: Buffer) => {
            const buf = assembled.get(bytes.buffer);
            assembled.delete(bytes.buffer);
            const req = decode(bytes);
            if (!buf) return req;
            const data = dataOf(req);
            // Unknown fields are kept as views of the buffer too: then it is left to the GC.
            const unknown = (req as { $unknown?: unknown[] }).$unknown?.length;
            if (unknown) return req;
            if (data instanceof Uint8Array && data.buffer === buf.buffer) lendView(data, pool, buf);
            else pool.give(buf);
            return req;
          },
        };
  }
  return out;
}
