/** Formats a byte count for people: 1.5 MiB. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

/**
 * A one-line progress display on a terminal's stderr (nothing when stderr is
 * not a TTY): `label  done / total  pct%`, redrawn at most 10 times a second,
 * shown only once the operation has run `delayMs`.
 */
export class ProgressLine {
  private last = 0;
  private shown = false;
  private readonly started = Date.now();
  private readonly tty: boolean;

  constructor(
    private readonly label: string,
    private total?: number,
    private readonly delayMs = 0,
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = out.isTTY === true;
  }

  setTotal(total: number): void {
    this.total = total;
  }

  /** Shows `done` bytes (and `extra` text, e.g. a file count). */
  update(done: number, extra = ""): void {
    if (!this.tty) return;
    const now = Date.now();
    if (now - this.started < this.delayMs || now - this.last < 100) return;
    this.last = now;
    const total = this.total ? ` / ${formatBytes(this.total)}` : "";
    const pct = this.total ? `  ${Math.min(100, Math.floor((done / this.total) * 100))}%` : "";
    const secs = ((now - this.started) / 1000).toFixed(1);
    this.out.write(`\r\x1b[K${this.label}  ${formatBytes(done)}${total}${pct}${extra}  ${secs}s`);
    this.shown = true;
  }

  /** Clears the line (if it was drawn). */
  end(): void {
    if (this.shown) this.out.write("\r\x1b[K");
    this.shown = false;
  }
}

/**
 * A progress reporter for the router's snapshots: a line on the router's
 * stderr (when it is a terminal) for any snapshot running over a second.
 */
export function snapshotProgress(): (ev: {
  label: string;
  startedAt: number;
  files: number;
  bytes: number;
  done: boolean;
}) => void {
  const lines = new Map<string, ProgressLine>();
  return (ev) => {
    const key = `${ev.label}@${ev.startedAt}`;
    let line = lines.get(key);
    if (!line) {
      line = new ProgressLine(ev.label, undefined, 1000);
      lines.set(key, line);
    }
    if (ev.done) {
      line.end();
      lines.delete(key);
    } else {
      line.update(ev.bytes, `  ${ev.files} files`);
    }
  };
}
