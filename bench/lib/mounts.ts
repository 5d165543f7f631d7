import { readFile } from "node:fs/promises";
import { run } from "./spawn.ts";

/** Mount points at or under `dir` (from /proc/self/mountinfo), deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile("/proc/self/mountinfo", "utf8").catch(() => "");
  const points = info
    .split("\n")
    .map((l) => l.split(" ")[4])
    .filter((p): p is string => !!p)
    .map((p) =>
      p.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8))),
    )
    .filter((p) => p === dir || p.startsWith(`${dir}/`));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/** Unmounts (lazily) every mount under `dir`: the ones the router made for the bench. */
export async function unmountUnder(dir: string): Promise<void> {
  for (const p of await mountsUnder(dir)) await run(["umount", "-l", p]).catch(() => {});
}
