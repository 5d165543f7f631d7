import { closeSync, openSync, readFileSync, renameSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";

/** The journal's file in the exec directory (router side only; the agent never opens it). */
export const JOURNAL = "execs.journal";
/** Rewritten from what is live once this many lines were appended since the last rewrite… */
const COMPACT_LINES = 10_000;

/** What the journal holds of one exec. */
export interface JournalEntry {
  /** SpawnSpec.persist.record. */
  record: string;
  /** EOF was sent to its stdin. */
  stdinClosed: boolean;
}

const KEY = /^[0-9a-f]{32}$/;

/**
 * The exec records of one task agent's directory, as one append-only file
 * instead of a file per exec (creating and removing a file costs this
 * machine's ext4 20-600 µs each, more than the rest of an exec's start):
 * lines `+KEY RECORD` (an exec started; RECORD is one line of JSON),
 * `=KEY` (EOF sent to its stdin) and `-KEY` (released). Each line is one
 * append (O_APPEND) before the request it records goes to the agent; a torn
 * last line (a crash mid-write) is ignored when read back. The file is
 * rewritten from the live entries when it is loaded and every COMPACT_LINES
 * appends.
 */
export class ExecJournal {
  private fd: number | undefined;
  private readonly live = new Map<string, JournalEntry>();
  private appended = 0;

  constructor(private readonly dir: string) {}

  private get path(): string {
    return join(this.dir, JOURNAL);
  }

  /** Reads the journal (once, before any append) and returns its live entries. */
  load(): Map<string, JournalEntry> {
    let text = "";
    try {
      text = readFileSync(this.path, "utf8");
    } catch {
      // no journal yet
    }
    const lines = text.split("\n");
    lines.pop(); // after the last newline: "" or a line torn by a crash
    for (const line of lines) {
      const key = line.slice(1, 33);
      if (!KEY.test(key)) continue;
      if (line[0] === "+" && line[33] === " ") {
        this.live.set(key, { record: line.slice(34), stdinClosed: false });
      } else if (line[0] === "=" && line.length === 33) {
        const e = this.live.get(key);
        if (e) e.stdinClosed = true;
      } else if (line[0] === "-" && line.length === 33) {
        this.live.delete(key);
      }
    }
    if (text !== "") this.compact();
    return new Map(this.live);
  }

  add(key: string, record: string): void {
    if (record.includes("\n")) throw new Error("an exec record must be one line");
    this.live.set(key, { record, stdinClosed: false });
    this.append(`+${key} ${record}\n`);
  }

  stdinClosed(key: string): void {
    const e = this.live.get(key);
    if (!e || e.stdinClosed) return;
    e.stdinClosed = true;
    this.append(`=${key}\n`);
  }

  remove(key: string): void {
    if (!this.live.delete(key)) return;
    this.append(`-${key}\n`);
    if (this.appended >= COMPACT_LINES && this.appended > 2 * this.live.size) this.compact();
  }

  private append(line: string): void {
    this.fd ??= openSync(this.path, "a", 0o600);
    writeSync(this.fd, line);
    this.appended++;
  }

  /** Rewrites the file with the live entries only (a new file, renamed over the old one). */
  private compact(): void {
    const lines: string[] = [];
    for (const [key, e] of this.live) {
      lines.push(`+${key} ${e.record}\n`);
      if (e.stdinClosed) lines.push(`=${key}\n`);
    }
    const tmp = `${this.path}.tmp`;
    writeFileSync(tmp, lines.join(""), { mode: 0o600 });
    renameSync(tmp, this.path);
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    this.appended = 0;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
