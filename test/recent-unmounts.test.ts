/**
 * RecentUnmounts (src/images/recent-unmounts.ts): which TaskUnmountDirectory
 * requests count as replays of one done lately. A clock of the test's own.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RecentUnmounts } from "../src/images/recent-unmounts.ts";

const path = (s: string) => new TextEncoder().encode(s);

describe("recent unmounts", () => {
  it("a replay is the same task, container and path bytes, within the window", () => {
    let now = 1_000;
    const r = new RecentUnmounts(60_000, 64, () => now);
    const key = RecentUnmounts.key("", path("/mnt/x"));
    assert.equal(r.isReplay("t1", key), false, "nothing unmounted yet");
    r.unmounted("t1", key);
    assert.equal(r.isReplay("t1", key), true);
    assert.equal(r.isReplay("t2", key), false, "another task");
    assert.equal(r.isReplay("t1", RecentUnmounts.key("ctr-1", path("/mnt/x"))), false, "a sidecar");
    assert.equal(r.isReplay("t1", RecentUnmounts.key("", path("/mnt/x/"))), false, "other bytes");
    assert.equal(RecentUnmounts.key(undefined, path("/a")), RecentUnmounts.key("", path("/a")));
    now += 59_999;
    assert.equal(r.isReplay("t1", key), true, "inside the window");
    now += 1;
    assert.equal(r.isReplay("t1", key), false, "the window has passed");
  });

  it("a new mount at the path, and the task's teardown, forget it", () => {
    const r = new RecentUnmounts(60_000, 64, () => 0);
    const a = RecentUnmounts.key("", path("/a"));
    const b = RecentUnmounts.key("", path("/b"));
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
    const keys = ["/1", "/2", "/3", "/4"].map((p) => RecentUnmounts.key("", path(p)));
    for (const k of keys.slice(0, 3)) r.unmounted("t", k);
    r.unmounted("t", keys[0] as string); // unmounted again: now the newest
    r.unmounted("t", keys[3] as string);
    assert.deepEqual(
      keys.map((k) => r.isReplay("t", k)),
      [true, false, true, true],
    );
  });
});
