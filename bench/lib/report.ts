/** The bench's result model and its Markdown rendering (the same text goes to stdout and BENCHMARKS.md). */

export interface Table {
  header: string[];
  rows: string[][];
}

export type TargetStatus = "PASS" | "MISS" | "n/a";

/** A goal from the issues, checked against a measured value. */
export interface Target {
  goal: string;
  measured: string;
  status: TargetStatus;
}

export interface Section {
  title: string;
  /** One line saying what was measured and how. */
  method: string;
  tables: Table[];
  targets: Target[];
  notes: string[];
}

/** A target whose status comes from `pass`; undefined (no measurement) gives "n/a". */
export function target(goal: string, measured: string, pass: boolean | undefined): Target {
  return { goal, measured, status: pass === undefined ? "n/a" : pass ? "PASS" : "MISS" };
}

export function renderTable(t: Table): string {
  const esc = (s: string) => s.replaceAll("|", "\\|");
  const lines = [
    `| ${t.header.map(esc).join(" | ")} |`,
    `| ${t.header.map(() => "---").join(" | ")} |`,
    ...t.rows.map((r) => `| ${r.map(esc).join(" | ")} |`),
  ];
  return lines.join("\n");
}

export function renderSection(s: Section): string {
  const out = [`### ${s.title}`, "", s.method, ""];
  for (const t of s.tables) out.push(renderTable(t), "");
  if (s.targets.length > 0) {
    out.push(
      renderTable({
        header: ["target", "measured", "result"],
        rows: s.targets.map((t) => [t.goal, t.measured, t.status]),
      }),
      "",
    );
  }
  for (const n of s.notes) out.push(`- ${n}`);
  if (s.notes.length > 0) out.push("");
  return out.join("\n");
}

/** A section for a scenario that could not run at all. */
export function unavailableSection(title: string, reason: string): Section {
  return { title, method: `unavailable: ${reason}`, tables: [], targets: [], notes: [] };
}

/** `ok(x)` when x was measured (finite), else undefined (the target shows "n/a"). */
export function check(x: number, ok: (x: number) => boolean): boolean | undefined {
  return Number.isFinite(x) ? ok(x) : undefined;
}
