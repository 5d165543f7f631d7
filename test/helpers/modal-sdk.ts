/**
 * What the suites that run Modal's own JS SDK against the router share
 * (test/modal-sdk*.test.ts): loading the SDK with none of this machine's
 * Modal config, routing a sandbox id to a task through the stand-in control
 * plane, a client built as a user builds one, and the checks they repeat.
 * Only types of the SDK are imported here: it is loaded by `loadSdks`, after
 * the environment is cleared.
 */
import assert from "node:assert/strict";
import type * as grpc from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import type { ContainerProcess, ModalClient } from "modal";
import { issueToken } from "../../src/auth/tokens.ts";
import type { ControlPlane } from "./modal-control-plane.ts";
import type { TestRouter } from "./router.ts";

export type Sdk = typeof import("modal");

/**
 * The SDK releases the suites run: `current` (npm `modal` 0.11.1) and `previous` (0.10.1,
 * installed as `modal-0.10`). The SDK reads its config file (~/.modal.toml) and MODAL_*
 * variables when it is loaded, so every inherited MODAL_* variable is cleared and the config
 * file hidden (MODAL_CONFIG_PATH=/dev/null) before either is loaded.
 */
export async function loadSdks(): Promise<{ current: Sdk; previous: Sdk }> {
  for (const k of Object.keys(process.env)) if (k.startsWith("MODAL_")) delete process.env[k];
  process.env.MODAL_CONFIG_PATH = "/dev/null";
  const current = await import("modal");
  const previous = (await import("modal-0.10")) as unknown as Sdk;
  return { current, previous };
}

/**
 * Makes `sandboxId` the SDK's way to `taskId` of router `r` (a jwt router), with a task token
 * of that task, at `address` (the router's own by default; a proxy's to cut connections).
 */
export async function routeTask(
  cp: ControlPlane,
  r: TestRouter,
  sandboxId: string,
  taskId: string,
  address = r.address,
): Promise<void> {
  const key = r.daemon.signingKey;
  assert.ok(key, "a jwt router has a signing key");
  const jwt = await issueToken(key, { task: taskId }, 3_600_000);
  cp.add(sandboxId, { taskId, routerUrl: `https://${address}`, jwt });
}

/**
 * A client of `sdk` as a user builds one: its control plane from MODAL_SERVER_URL (`cp`),
 * read when it is constructed; `env`: more MODAL_* settings for this client only.
 */
export function modalClient(
  sdk: Sdk,
  cp: ControlPlane,
  env: Record<string, string> = {},
): ModalClient {
  const saved = Object.keys(env).map((k) => [k, process.env[k]] as const);
  process.env.MODAL_SERVER_URL = cp.endpoint;
  Object.assign(process.env, env);
  try {
    return new sdk.ModalClient({ tokenId: "ak-test", tokenSecret: "as-test", logLevel: "error" });
  } finally {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** Asserts that `p` rejects with gRPC status `code` as the SDK surfaces it, details matching `re`. */
export async function rejectsGrpc(
  p: Promise<unknown>,
  code: grpc.status,
  re?: RegExp,
): Promise<void> {
  await assert.rejects(p, (e: { code?: unknown; details?: unknown }) => {
    assert.equal(e.code, code, `${status[code]} expected: ${String(e)}`);
    if (re) assert.match(typeof e.details === "string" ? e.details : String(e), re);
    return true;
  });
}

/** What `seq N` prints. */
export function expectedSeq(n: number): string {
  const parts: string[] = [];
  for (let i = 1; i <= n; i++) parts.push(`${i}\n`);
  return parts.join("");
}

/** Where the SDK runs a command: a sandbox or a sidecar. */
export interface ExecTarget {
  exec(command: string[]): Promise<ContainerProcess<string>>;
}

/** Runs `argv` through the SDK on `where`: its exit code, stdout and stderr. */
export async function runSdk(
  where: ExecTarget,
  argv: string[],
): Promise<{ code: number; out: string; err: string }> {
  const p = await where.exec(argv);
  const [out, err] = await Promise.all([p.stdout.readText(), p.stderr.readText()]);
  return { code: await p.wait(), out, err };
}

/**
 * Ends what a suite opened toward the SDK, each part only when it was made (a setup that
 * failed part-way leaves the rest undefined): the sandbox handle, the SDK's client, the
 * stand-in control plane, then a proxy between the SDK and the router.
 */
export async function closeSdk(parts: {
  sb?: { detach(): void } | undefined;
  modal?: { close(): void } | undefined;
  cp?: { close(): Promise<void> } | undefined;
  proxy?: { close(): Promise<void> } | undefined;
}): Promise<void> {
  parts.sb?.detach();
  parts.modal?.close();
  await parts.cp?.close();
  await parts.proxy?.close();
}
