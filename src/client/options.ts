import type { ChannelCredentials } from "@grpc/grpc-js";
import type { RetryPolicy } from "./retry.ts";

/** How a RouterClient connects (./client.ts). */
export interface ClientOptions {
  /** Bearer token sent as `authorization` on every call. */
  token?: string;
  credentials?: ChannelCredentials;
  retry?: RetryPolicy;
  /**
   * Bulk reads (TaskFilesystem.readFile, `taskrouter cp` downloads) on the
   * native receiver where it is built and the address is a plaintext
   * `host:port` (default true; ./bulk-read.ts). false: every
   * read goes through grpc-js.
   */
  bulkReads?: boolean;
}

export interface StartOptions {
  /** Idempotency key; a random UUID when unset. */
  execId?: string;
  stdout?: "pipe" | "devnull";
  stderr?: "pipe" | "devnull" | "stdout";
  timeoutSecs?: number;
  workdir?: string;
  /** Secrets whose pairs become env vars of the command (later ids win). */
  secretIds?: string[];
  /** Env vars set directly (`env`, applied over the secrets). */
  env?: Record<string, string>;
  /** Run on a pseudo-terminal (all output on stdout; stdin bytes go to the terminal). */
  pty?: PtyStartOptions;
}

export interface PtyStartOptions {
  rows: number;
  cols: number;
  /** TERM, COLORTERM, TERM_PROGRAM of the command (the server defaults TERM). */
  term?: string;
  colorterm?: string;
  termProgram?: string;
  /** Never end the session for idle stdin (the server's --pty-idle-timeout). */
  noTerminateOnIdleStdin?: boolean;
}
