import { performance } from "node:perf_hooks";
import type { RouterClient } from "../../src/client/client.ts";
import { writeStdinStream } from "../../src/client/stdin-stream.ts";

/**
 * The router's side of each scenario, through the project's client over
 * loopback. Each function checks the result (exit status, byte counts) so a
 * failing exec never reports a fast time.
 */

async function expectZero(client: RouterClient, task: string, id: string, what: string) {
  const s = await client.wait(task, id);
  if (s.code !== 0) throw new Error(`${what}: exit ${JSON.stringify(s)}`);
}

/** TaskExecStart → TaskExecWait returns (stdout and stderr piped); ms. */
export async function oursExit(client: RouterClient, task: string, argv: string[]) {
  const t0 = performance.now();
  const id = await client.start(task, argv, { stdout: "pipe", stderr: "pipe" });
  await expectZero(client, task, id, argv.join(" "));
  return performance.now() - t0;
}

/** TaskExecStart → first stdout byte via TaskExecStdioRead; output checked; ms. */
export async function oursFirstByte(
  client: RouterClient,
  task: string,
  argv: string[],
  expect: string,
) {
  const t0 = performance.now();
  const id = await client.start(task, argv, { stdout: "pipe", stderr: "pipe" });
  let first = Number.NaN;
  const parts: Buffer[] = [];
  for await (const c of client.read(task, id, "stdout")) {
    if (parts.length === 0) first = performance.now() - t0;
    parts.push(c);
  }
  const got = Buffer.concat(parts).toString();
  if (got !== expect) throw new Error(`${argv.join(" ")} printed ${JSON.stringify(got)}`);
  await expectZero(client, task, id, argv.join(" "));
  return first;
}

/** TaskExecStart → stdout read to its end (byte count checked) and exit 0; ms. */
export async function oursRead(client: RouterClient, task: string, argv: string[], bytes: number) {
  const t0 = performance.now();
  const id = await client.start(task, argv, { stdout: "pipe", stderr: "pipe" });
  let n = 0;
  for await (const c of client.read(task, id, "stdout")) n += c.length;
  if (n !== bytes) throw new Error(`${argv.join(" ")}: read ${n} bytes, expected ${bytes}`);
  await expectZero(client, task, id, argv.join(" "));
  return performance.now() - t0;
}

/**
 * TaskExecStart → `bytes` of stdin (`chunk` repeated), EOF → exit 0; ms. `via`: in
 * `chunk`-sized TaskExecStdinWrite calls, each awaited (the upstream SDK's writes), or
 * through TaskExecStdinWriteStream (`writeStdinStream`: 256 KiB messages, the upload path).
 */
export async function oursWrite(
  client: RouterClient,
  task: string,
  argv: string[],
  bytes: number,
  chunk: Buffer,
  via: "unary" | "stream" = "unary",
) {
  const t0 = performance.now();
  const id = await client.start(task, argv, { stdout: "devnull", stderr: "pipe" });
  const parts = function* () {
    for (let off = 0; off < bytes; off += chunk.length) {
      yield off + chunk.length <= bytes ? chunk : chunk.subarray(0, bytes - off);
    }
  };
  if (via === "stream") {
    const sent = await writeStdinStream(
      client,
      task,
      id,
      (async function* () {
        yield* parts();
      })(),
    );
    if (sent !== bytes) throw new Error(`${argv.join(" ")}: sent ${sent} bytes, expected ${bytes}`);
  } else {
    let off = 0;
    for (const part of parts()) {
      await client.writeStdin(task, id, off, part, off + part.length >= bytes);
      off += part.length;
    }
  }
  await expectZero(client, task, id, argv.join(" "));
  return performance.now() - t0;
}
