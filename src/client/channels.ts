import { type ChannelCredentials, Client } from "@grpc/grpc-js";

/** Channel options of every RouterClient channel. */
const OPTIONS = {
  "grpc.max_receive_message_length": 128 * 1024 * 1024,
  "grpc.max_send_message_length": 128 * 1024 * 1024,
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc-node.flow_control_window": 64 * 1024 * 1024,
};

/** The channel of every call but stdin streams. */
export function callChannel(address: string, credentials: ChannelCredentials): Client {
  return new Client(address, credentials, OPTIONS);
}

/**
 * The channel of stdin streams (uploads: TaskExecStdinWriteStream), its own
 * HTTP/2 connection. grpc-js keeps no retry buffer on it
 * (`grpc.per_rpc_retry_buffer_size` 0): a message that fits grpc-js's retry
 * buffer has its write acknowledged at once and is sent later, so its memory
 * could not be reused on that acknowledgement; here a write of a call that
 * has not failed is acknowledged once its bytes went to the socket, and a
 * stream lends its chunks (framed in place, src/client/in-place-frames.ts)
 * and reuses them then; after a failure it reuses none (docs/DECISIONS.md,
 * "Uploads framed in place"). What the buffer would have given, a transparent
 * retry of a stream the server refused, the stream's own resume does
 * (TaskExecStdinStatus, then a new stream from the offset). Both channels
 * must reach the same router (one address: a router per node, not a pool
 * behind a balancer).
 */
export function uploadChannel(address: string, credentials: ChannelCredentials): Client {
  return new Client(address, credentials, { ...OPTIONS, "grpc.per_rpc_retry_buffer_size": 0 });
}
