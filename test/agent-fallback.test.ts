/**
 * A task agent older than the stdin ring (it answers exec flag `i` with
 * bad-request): the router retries without the flag and writes KEY.in as a
 * linear file for that agent from then on (src/runtime/agent/task-agent.ts
 * `start`, agent-stdin.ts `linear`). The older agent is native/task-agent.c
 * built with -DTASKROUTER_AGENT_WITHOUT_RING, which refuses the flag as one
 * of before the ring did. Skips, saying why, without a C compiler.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  constants as fsc,
  mkdirSync,
  openSync,
  readdirSync,
  statSync,
} from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { startAgentProcess } from "../src/runtime/agent/launch.ts";
import { TaskAgent } from "../src/runtime/agent/task-agent.ts";
import type { Proc } from "../src/runtime/proc.ts";

const SOURCE = resolve(import.meta.dirname, "../native/task-agent.c");
const MiB = 1 << 20;
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

function compilerMissing(): string | false {
  try {
    execFileSync("cc", ["--version"], { stdio: "ignore" });
    return false;
  } catch {
    return "no C compiler (cc) to build an agent without the stdin ring";
  }
}
const skip = compilerMissing();
if (skip) console.log(`# skipping: ${skip}`);

/** Writes `data` into `p`'s stdin in pieces of `piece` bytes, then ends it. */
async function feed(p: Proc, data: Buffer, piece: number): Promise<void> {
  for (let off = 0; off < data.length; off += piece) {
    const chunk = data.subarray(off, off + piece);
    await new Promise<void>((res, rej) => p.stdin.write(chunk, (err) => (err ? rej(err) : res())));
  }
  await new Promise<void>((res) => p.stdin.end(res));
}

describe("a task agent older than the stdin ring", { skip }, () => {
  let tmp = "";
  let agentBin = "";
  let agent: TaskAgent | undefined;
  let dir = "";
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), "taskrouter-agent-fallback-"));
    agentBin = join(tmp, "old-agent");
    execFileSync("cc", ["-O2", "-DTASKROUTER_AGENT_WITHOUT_RING", "-o", agentBin, SOURCE]);
    dir = join(tmp, "agent");
    mkdirSync(dir);
    agent = new TaskAgent(
      dir,
      async (d) => {
        const fd = openSync(d, fsc.O_RDONLY | fsc.O_DIRECTORY);
        try {
          await startAgentProcess(agentBin, [], {
            env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
            fd3: fd,
          });
        } finally {
          closeSync(fd);
        }
      },
      { debug: false },
    );
  });
  after(async () => {
    try {
      await agent?.quit(); // ends the agent and its execs (SIGKILL)
    } finally {
      if (tmp) await rm(tmp, { recursive: true, force: true });
    }
  });

  const run = async (data: Buffer, piece: number) => {
    const a = agent as TaskAgent;
    const p = await a.spawn({
      argv: ["sha256sum"],
      env: { PATH: "/usr/bin:/bin" },
      cwd: "/",
      stdout: "pipe",
      stderr: "pipe",
    });
    await feed(p, data, piece);
    assert.deepEqual(await p.exited, { code: 0 });
    const out = p.output?.stdout;
    assert.ok(out, "the agent writes the output into a file");
    while (!out.ended) await out.changed();
    return { p, digest: (await readFile(out.path, "latin1")).split(" ")[0] };
  };

  // A router writing a ring to this agent would stall it: bounded, so that fails rather than hangs.
  it("runs an exec with stdin once more without the ring, and keeps KEY.in linear", {
    timeout: 120_000,
  }, async () => {
    const data = randomBytes(96 * MiB + 5); // past the ring's 64 MiB: a ring would wrap
    const { digest } = await run(data, 4 * MiB + 1);
    assert.equal(digest, sha(data));
    const ins = readdirSync(dir).filter((n) => n.endsWith(".in"));
    assert.equal(ins.length, 1, `one stdin file: ${readdirSync(dir).join(" ")}`);
    const inPath = join(dir, ins[0] as string);
    assert.equal(statSync(inPath).size, data.length, "linear: as long as what was written");
    assert.equal(existsSync(`${inPath}len`), false, "no ring count file");
    assert.equal(agent?.stdinRings, false, "rings stay off for this agent");
  });

  it("goes on with linear files for the next exec of that agent", { timeout: 60_000 }, async () => {
    const data = randomBytes(3 * MiB);
    const { digest } = await run(data, 64 * 1024);
    assert.equal(digest, sha(data));
    // The start did not offer the ring again (an agent that refused it once is older).
    assert.equal(agent?.stdinRings, false);
    assert.equal(
      readdirSync(dir).filter((n) => n.endsWith(".inlen")).length,
      0,
      "no ring count file",
    );
  });
});
