import assert from "node:assert/strict";

/** The samples of a Prometheus text exposition: `name{labels}` → value. */
export function parseProm(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

/** The value of the sample named exactly `key` (labels in exposition order), 0 when absent. */
export function sample(m: Map<string, number>, key: string): number {
  return m.get(key) ?? 0;
}

/** GET `url` (a router's /metrics), checked to be Prometheus text, parsed. */
export async function scrapeProm(url: string): Promise<Map<string, number>> {
  const res = await fetch(url);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
  return parseProm(await res.text());
}
