import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { UnavailableError } from "../src/errors.ts";
import type { AgentConn } from "../src/runtime/agent/agent-conn.ts";
import { AgentLink } from "../src/runtime/agent/agent-link.ts";
import { launchHostAgent } from "../src/runtime/agent/launch.ts";
import { agentsIn } from "./helpers/procs.ts";

/**
 * The router's link to one real task agent (src/runtime/agent/agent-link.ts).
 * The agent keeps only its newest connection and closes the one before, so
 * two connection attempts at once would cut each other: a resync's list on
 * one would fail and the agent's execs be taken for lost. Attempts run one at
 * a time and share the connection one of them made.
 */
describe("the link to a task agent", () => {
  let dir = "";
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "agent-link-"));
  });
  after(() => {
    // quit ended the agent; by pid what a failed test left (root can read the agent's fd 3)
    if (process.getuid?.() === 0) for (const pid of agentsIn(dir)) process.kill(pid, "SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  it("connects once for attempts made at once, also right after the agent cut it", async () => {
    const dropped: Promise<AgentConn[]>[] = [];
    let onDrop: (c: AgentConn) => void = () => {};
    const link = new AgentLink(dir, launchHostAgent, {
      attached: () => {},
      dropped: (c) => onDrop(c),
    });
    try {
      const conn = await link.connection(); // launches the agent
      const first = await Promise.all([link.connection(), link.reconnect()]);
      assert.ok(first[0] === conn && first[1] === conn, "the open connection");
      await conn.ping();
      // Another connection to the agent: it closes the link's. In that moment, as a resync
      // and a start would, the link is asked twice at once.
      dropped.push(
        new Promise((resolve) => {
          onDrop = () => resolve(Promise.all([link.reconnect(), link.connection()]));
        }),
      );
      const other = connect(join(dir, "agent.sock"));
      other.on("error", () => {});
      const [a, b] = (await dropped[0]) as [AgentConn, AgentConn];
      other.destroy();
      assert.ok(a === b, "the same connection for both");
      assert.ok(a !== conn, "a new one");
      await a.ping(); // still the agent's current connection: not cut by a second attempt
      assert.equal(a.isClosed, false);
    } finally {
      await link.quit();
    }
  });

  it("quits the agent an attempt in flight is launching", async () => {
    const sub = mkdtempSync(join(dir, "quit-"));
    const link = new AgentLink(sub, launchHostAgent, { attached: () => {}, dropped: () => {} });
    const attempt = link.connection().then(
      (c) => c,
      (err: unknown) => err,
    );
    await link.quit(); // while the attempt launches the agent
    const got = await attempt;
    assert.ok(got instanceof UnavailableError, `the attempt was refused: ${String(got)}`);
    if (process.getuid?.() === 0) assert.deepEqual(agentsIn(sub), [], "no agent left running");
    await assert.rejects(link.connection(), UnavailableError);
  });

  it("never starts an agent on reconnect, and connects no more once closed", async () => {
    const sub = mkdtempSync(join(dir, "none-"));
    let launches = 0;
    const link = new AgentLink(
      sub,
      async (d) => {
        launches++;
        await launchHostAgent(d);
      },
      { attached: () => {}, dropped: () => {} },
    );
    try {
      await assert.rejects(link.reconnect());
      assert.equal(launches, 0);
      await (await link.connection()).ping();
      assert.equal(launches, 1);
      link.close();
      await assert.rejects(link.connection(), UnavailableError);
      await assert.rejects(link.reconnect(), UnavailableError);
      assert.equal(launches, 1);
    } finally {
      // close() leaves the agent running (a router shutdown does): a new link ends it
      await new AgentLink(sub, async () => {}, { attached: () => {}, dropped: () => {} }).quit();
    }
  });
});
