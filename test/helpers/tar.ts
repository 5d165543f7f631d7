import { type Header, pack } from "tar-stream";

/** A tar entry: its header (name required) and, for a file, its bytes. */
export type TarItem = Partial<Header> & { name: string; body?: string | Buffer };

/**
 * A tar (as bytes) of `items`, built with tar-stream: an item with a body
 * is a file (mode 0644 unless given), one without keeps its header as given
 * (mode 0755 unless given; name its `type`).
 */
export async function tarOf(items: TarItem[]): Promise<Buffer> {
  const p = pack();
  const parts: Buffer[] = [];
  p.on("data", (c: unknown) => parts.push(c as Buffer));
  const end = new Promise<void>((resolve) => p.on("end", () => resolve()));
  for (const { body, ...h } of items) {
    if (body !== undefined) p.entry({ mode: 0o644, ...h }, body);
    else p.entry({ mode: 0o755, ...h });
  }
  p.finalize();
  await end;
  return Buffer.concat(parts);
}
