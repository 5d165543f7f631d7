/**
 * `node --import tsx bench/lib/burst-child.ts N`: N raw spawns of `echo hello`
 * issued at once from this small, fresh process (fork cost grows with the
 * parent's memory, and the bench process has read gigabytes by then). Prints
 * the Burst as JSON on stdout.
 */
import { spawn } from "node:child_process";
import { performance } from "node:perf_hooks";

const n = Number(process.argv[2]);
const start: number[] = [];
const done: number[] = [];
const t0 = performance.now();
await Promise.all(
  Array.from(
    { length: n },
    () =>
      new Promise<void>((resolve, reject) => {
        const child = spawn("echo", ["hello"], { stdio: "pipe" });
        child.stdin.end();
        const parts: Buffer[] = [];
        child.stdout.on("data", (b: Buffer) => parts.push(b));
        child.stderr.resume();
        child.once("spawn", () => start.push(performance.now() - t0));
        child.once("error", reject);
        child.once("close", (code) => {
          if (code !== 0 || Buffer.concat(parts).toString() !== "hello\n") {
            reject(new Error(`raw concurrent exec: exit ${code}`));
          } else {
            done.push(performance.now() - t0);
            resolve();
          }
        });
      }),
  ),
);
process.stdout.write(JSON.stringify({ elapsedMs: performance.now() - t0, start, done }));
