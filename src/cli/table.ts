/**
 * Writes `rows` (the first one is the header) to stdout as a table: every
 * column padded to its widest cell, columns separated by two spaces, trailing
 * spaces trimmed, one `\n`-terminated line per row. Rows are as wide as the header.
 */
export function printTable(rows: string[][]): void {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  for (const r of rows) {
    const line = r.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  ");
    process.stdout.write(`${line.trimEnd()}\n`);
  }
}
