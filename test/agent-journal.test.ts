import assert from "node:assert/strict";
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ExecJournal, JOURNAL } from "../src/runtime/agent/journal.ts";

/** The exec records of a task agent's directory (src/runtime/agent/journal.ts), on a real file. */
describe("the exec journal", () => {
  // Made when the suite runs (not when a --test-name-pattern run only loads it).
  let dir = "";
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "journal-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  const k = (n: number) => n.toString(16).padStart(32, "0");

  it("reads back what was added, EOFs, and not what was removed", () => {
    const j = new ExecJournal(dir);
    assert.equal(j.load().size, 0);
    j.agentLaunched(); // the task's first agent, as the router launches it before its first exec
    j.add(k(1), '{"a":1}');
    j.add(k(2), '{"b":2}');
    j.stdinClosed(k(2));
    j.add(k(3), '{"c":3}');
    j.remove(k(1));
    j.close();
    const live = new ExecJournal(dir).load();
    assert.deepEqual([...live].sort(), [
      [k(2), { record: '{"b":2}', stdinClosed: true, earlierAgent: false }],
      [k(3), { record: '{"c":3}', stdinClosed: false, earlierAgent: false }],
    ]);
  });

  it("ignores a torn last line and junk, and rewrites the file from the live entries", () => {
    const path = join(dir, JOURNAL);
    appendFileSync(path, `garbage\n-${k(9)}\n+${k(4)} {"d"`); // a crash in the middle of a line
    const live = new ExecJournal(dir).load();
    assert.deepEqual([...live.keys()].sort(), [k(2), k(3)]);
    const text = readFileSync(path, "utf8");
    assert.ok(!text.includes("garbage") && text.endsWith("\n"), "rewritten whole");
  });

  it("marks the records made before an agent launch, across rewrites", () => {
    const sub = mkdtempSync(join(dir, "launch-"));
    const j = new ExecJournal(sub);
    j.load();
    j.add(k(1), "{}");
    j.stdinClosed(k(1));
    j.agentLaunched(); // k(1) went (if at all) to the agent before
    j.add(k(2), "{}");
    j.close();
    const earlier = (live: Map<string, { earlierAgent: boolean }>) =>
      [...live].filter(([, e]) => e.earlierAgent).map(([key]) => key);
    const first = new ExecJournal(sub);
    const live = first.load(); // also rewrites the file from the live entries
    assert.deepEqual(earlier(live), [k(1)]);
    assert.equal(live.get(k(1))?.stdinClosed, true);
    first.add(k(3), "{}");
    first.close();
    assert.deepEqual(earlier(new ExecJournal(sub).load()), [k(1)], "kept by the rewrite");
  });

  it("holds every record of a journal without launch lines (an older router's) as earlier", () => {
    const sub = mkdtempSync(join(dir, "old-"));
    appendFileSync(join(sub, JOURNAL), `+${k(5)} {}\n+${k(6)} {}\n=${k(6)}\n`);
    const first = new ExecJournal(sub);
    assert.deepEqual(
      [...first.load().values()].map((e) => e.earlierAgent),
      [true, true],
    );
    first.add(k(7), "{}"); // after the rewrite, which recorded that launches are recorded now
    first.close();
    const live = new ExecJournal(sub).load();
    assert.deepEqual(
      [...live].map(([key, e]) => [key, e.earlierAgent]),
      [
        [k(5), true],
        [k(6), true],
        [k(7), false],
      ],
    );
  });

  it("refuses a record of more than one line", () => {
    const j = new ExecJournal(dir);
    j.load();
    assert.throws(() => j.add(k(5), "a\nb"));
    j.close();
  });
});
