/**
 * RecentUnmounts (src/images/recent-unmounts.ts): which TaskUnmountDirectory
 * requests count as replays of one done lately. A clock of the test's own.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RecentUnmounts } from "../src/images/recent-unmounts.ts";

const key = (containerId: string | undefined, ...components: string[]) =>
  RecentUnmounts.key(containerId, components);

describe("recent unmounts", () => {
  it("a replay is the same task, container and path, within the window", () => {
    let now = 1_000;
    const r = new RecentUnmounts(60_000, 64, () => now);
    const k = key("", "mnt", "x");
    assert.equal(r.isReplay("t1", k), false, "nothing unmounted yet");
    r.unmounted("t1", k);
    assert.equal(r.isReplay("t1", k), true);
    assert.equal(r.isReplay("t2", k), false, "another task");
    assert.equal(r.isReplay("t1", key("ctr-1", "mnt", "x")), false, "a sidecar");
    assert.equal(r.isReplay("t1", key("", "mnt", "x", "y")), false, "a path below");
    assert.equal(r.isReplay("t1", key("", "mntx")), false, "components, not their concatenation");
    assert.equal(r.isReplay("t1", key("", "mnt")), false, "a path above");
    assert.equal(key(undefined, "a"), key("", "a"), "no container is the main one");
    assert.equal(key("", "\xff\x00").length, key("", "x".repeat(4000)).length, "a fixed size");
    now += 59_999;
    assert.equal(r.isReplay("t1", k), true, "inside the window");
    now += 1;
    assert.equal(r.isReplay("t1", k), false, "the window has passed");
  });

  it("a new mount at the path, and the task's teardown, forget it", () => {
    const r = new RecentUnmounts(60_000, 64, () => 0);
    const a = key("", "a");
    const b = key("", "b");
    r.unmounted("t", a);
    r.unmounted("t", b);
    r.mounted("t", a);
    assert.equal(r.isReplay("t", a), false);
    assert.equal(r.isReplay("t", b), true);
    r.forgetTask("t");
    assert.equal(r.isReplay("t", b), false);
  });

  it("keeps at most perTask records per task, dropping the oldest", () => {
    const r = new RecentUnmounts(60_000, 3, () => 0);
    const keys = ["1", "2", "3", "4"].map((p) => key("", p));
    for (const k of keys.slice(0, 3)) r.unmounted("t", k);
    r.unmounted("t", keys[0] as string); // unmounted again: now the newest
    r.unmounted("t", keys[3] as string);
    assert.deepEqual(
      keys.map((k) => r.isReplay("t", k)),
      [true, false, true, true],
    );
  });
});
