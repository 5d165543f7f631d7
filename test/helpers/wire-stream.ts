/**
 * TaskExecStdinWriteStream through the independent proto-loader client
 * (test/helpers/wire-client.ts): the client-streaming call, and the JS SDK's
 * resume loop around it (PROTOCOL-LATER §5.4), for wire tests.
 */
import { grpc, type WireClient } from "./wire-client.ts";

/** One message of the stream, as proto-loader takes it (oneof `payload`). */
export type StreamMsg =
  | { start: { task_id: string; exec_id: string; offset: number } }
  | { data: Buffer }
  | { end: Record<string, never> };

type ClientStreamFn = (
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null) => void,
) => grpc.ClientWritableStream<StreamMsg>;

export interface StreamCall {
  /** Writes a message, waiting for the transport's backpressure. */
  send(msg: StreamMsg): Promise<void>;
  /** Half-closes and resolves with the response (rejects with the call's error). */
  finish(): Promise<void>;
  /** The call's outcome, also when it ends before `finish` (e.g. evicted or cut). */
  result: Promise<void>;
  cancel(): void;
}

/** Opens TaskExecStdinWriteStream on `client`. */
export function openStdinStream(client: WireClient, md = new grpc.Metadata()): StreamCall {
  const fn = (client.raw as unknown as Record<string, ClientStreamFn>)
    .TaskExecStdinWriteStream as ClientStreamFn;
  let settle: (err: grpc.ServiceError | null) => void = () => {};
  const result = new Promise<void>((resolve, reject) => {
    settle = (err) => (err ? reject(err) : resolve());
  });
  result.catch(() => {});
  const call = fn.call(client.raw, md, {}, (err) => settle(err));
  return {
    // Waits for the transport, or fails with the call's error when it ends first.
    send: (msg) =>
      Promise.race([
        new Promise<void>((resolve) => {
          if (call.write(msg)) resolve();
          else call.once("drain", () => resolve());
        }),
        result.then(() => {
          throw new Error("the stream ended before this message was sent");
        }),
      ]),
    finish: () => {
      call.end();
      return result;
    },
    result,
    cancel: () => call.cancel(),
  };
}

const TRANSIENT = new Set([
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.UNAVAILABLE,
  grpc.status.CANCELLED,
  grpc.status.INTERNAL,
  grpc.status.UNKNOWN,
]);

/**
 * Uploads `source` to the exec's stdin the way the JS SDK does: start at
 * offset 0, chunks of ≤ 256 KiB, end; after a transient failure ask
 * TaskExecStdinStatus and resume at `num_bytes_written` (at most
 * `maxResumes` times). `clientFor(attempt)` gives the client of each attempt
 * (a new connection through a proxy, say). Returns the number of attempts.
 */
export async function uploadLikeSdk(
  clientFor: (attempt: number) => WireClient,
  task_id: string,
  exec_id: string,
  source: Buffer,
  maxResumes = 9,
): Promise<number> {
  let offset = 0;
  for (let attempt = 0; ; attempt++) {
    const client = clientFor(attempt);
    try {
      const s = openStdinStream(client);
      await s.send({ start: { task_id, exec_id, offset } });
      for (let p = offset; p < source.length; p += 256 * 1024) {
        await s.send({ data: source.subarray(p, Math.min(p + 256 * 1024, source.length)) });
      }
      await s.send({ end: {} });
      await s.finish();
      return attempt + 1;
    } catch (err) {
      const code = (err as grpc.ServiceError).code;
      if (!TRANSIENT.has(code) || attempt >= maxResumes) throw err;
      const st = await clientFor(attempt + 1).unary("TaskExecStdinStatus", { task_id, exec_id });
      const written = Number(st.num_bytes_written);
      if (st.closed) {
        if (written === source.length) return attempt + 1;
        throw err;
      }
      offset = written;
    }
  }
}
