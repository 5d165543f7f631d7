import assert from "node:assert/strict";
import { readdir, readlink } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

/** `pid/fd/N` of every descriptor of a process here that refers to `target` (a /proc link text). */
async function holdersOf(target: string): Promise<string[]> {
  const holders: string[] = [];
  for (const pid of (await readdir("/proc")).filter((d) => /^\d+$/.test(d))) {
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const to = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => "");
      if (to === target) holders.push(`${pid}/fd/${fd}`);
    }
  }
  return holders;
}

/**
 * Waits until no process has a descriptor of the file that was at `path`
 * before it was replaced (its /proc link reads "PATH (deleted)"). The holders
 * it waits out are children that exit at once; after 30 s (a hang guard, not
 * a speed limit) it fails, naming them.
 */
export async function noHolderOfReplaced(path: string): Promise<void> {
  let holders: string[] = [];
  for (const end = Date.now() + 30_000; ; ) {
    holders = await holdersOf(`${path} (deleted)`);
    if (holders.length === 0) return;
    if (Date.now() > end) break;
    await sleep(50);
  }
  assert.fail(`the replaced file is still held: ${holders.join(", ")}`);
}
