import { closeSync, constants as fsc, openSync, renameSync, writeSync } from "node:fs";
import { basename, join } from "node:path";
import { createOrOpenSync, ExecDirFileError, readBounded, unlinkName } from "./exec-dir-files.ts";

/** The journal's file in the exec directory (router side only; the agent never opens it). */
export const JOURNAL = "execs.journal";
/**
 * The most of the journal read back (ExecDirFileError past it): live records
 * are one line each, and the file is rewritten from them at every load and
 * every COMPACT_LINES appends.
 */
export const MAX_JOURNAL_BYTES = 256 * 1024 * 1024;
/** Rewritten from what is live once this many lines were appended since the last rewrite… */
const COMPACT_LINES = 10_000;

/** What the journal holds of one exec. */
export interface JournalEntry {
  /** SpawnSpec.persist.record. */
  record: string;
  /** EOF was sent to its stdin. */
  stdinClosed: boolean;
  /**
   * An agent was launched after it was recorded: the exec went (if it went
   * at all) to an agent that is gone, so whichever agent runs now cannot
   * say that it never reached one. Also every entry of a journal without
   * any `@` (one written before launches were recorded).
   */
  earlierAgent: boolean;
}

const KEY = /^[0-9a-f]{32}$/;

/**
 * The exec records of one task agent's directory, as one append-only file
 * instead of a file per exec (creating and removing a file costs this
 * machine's ext4 20-600 µs each, more than the rest of an exec's start):
 * lines `+KEY RECORD` (an exec started; RECORD is one line of JSON),
 * `=KEY` (EOF sent to its stdin), `-KEY` (released) and `@` (an agent is
 * about to be launched: the execs above went to an earlier one). Each line is one
 * append (O_APPEND) before the request it records goes to the agent; a torn
 * last line (a crash mid-write) is ignored when read back. The file is
 * rewritten from the live entries when it is loaded and every COMPACT_LINES
 * appends.
 *
 * The file lives in the agent's exec directory, which a process of the task
 * can fill with anything (exec-dir-files.ts): it is only ever opened as a
 * regular file, never through a symlink, read up to MAX_JOURNAL_BYTES, and
 * rewritten into a new file (created O_EXCL|O_NOFOLLOW) renamed over the
 * old name, so nothing outside the directory is ever written. A journal that
 * is not a regular file (or too large) fails `load` with ExecDirFileError;
 * an append that finds one replaces it with the live entries.
 */
export class ExecJournal {
  private fd: number | undefined;
  private readonly live = new Map<string, JournalEntry>();
  private appended = 0;

  constructor(private readonly dir: string) {}

  private get path(): string {
    return join(this.dir, JOURNAL);
  }

  /**
   * Reads the journal (once, before any append) and returns its live entries.
   * @throws ExecDirFileError when it is not a regular file or is over MAX_JOURNAL_BYTES
   */
  load(): Map<string, JournalEntry> {
    const text = readBounded(this.path, MAX_JOURNAL_BYTES)?.toString("utf8") ?? "";
    const lines = text.split("\n");
    lines.pop(); // after the last newline: "" or a line torn by a crash
    let launches = false;
    for (const line of lines) {
      if (line === "@") {
        this.markEarlier();
        launches = true;
      }
      const key = line.slice(1, 33);
      if (!KEY.test(key)) continue;
      if (line[0] === "+" && line[33] === " ") {
        this.live.set(key, { record: line.slice(34), stdinClosed: false, earlierAgent: false });
      } else if (line[0] === "=" && line.length === 33) {
        const e = this.live.get(key);
        if (e) e.stdinClosed = true;
      } else if (line[0] === "-" && line.length === 33) {
        this.live.delete(key);
      }
    }
    // A journal of a router before stop 38 records no launch: where its execs went is unknown.
    if (!launches) this.markEarlier();
    if (text !== "") this.compact();
    return new Map(this.live);
  }

  add(key: string, record: string): void {
    if (record.includes("\n")) throw new Error("an exec record must be one line");
    this.live.set(key, { record, stdinClosed: false, earlierAgent: false });
    this.append(`+${key} ${record}\n`);
  }

  /** Records that an agent is about to be launched (before it is: see JournalEntry.earlierAgent). */
  agentLaunched(): void {
    this.markEarlier();
    this.append("@\n");
  }

  private markEarlier(): void {
    for (const e of this.live.values()) e.earlierAgent = true;
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
    if (this.appended >= COMPACT_LINES && this.appended > 2 * this.live.size) {
      try {
        this.compact();
      } catch (err) {
        // A task racing us on the tmp name: the journal stays as it is, appends go on.
        if (!(err instanceof ExecDirFileError)) throw err;
      }
    }
  }

  private append(line: string): void {
    this.fd ??= this.openAppend();
    writeSync(this.fd, line);
    this.appended++;
  }

  /** The journal for appends; one that is not a regular file is replaced by the live entries. */
  private openAppend(): number {
    const flags = fsc.O_WRONLY | fsc.O_APPEND;
    try {
      return createOrOpenSync(this.path, flags);
    } catch (err) {
      if (!(err instanceof ExecDirFileError)) throw err;
    }
    this.compact();
    return createOrOpenSync(this.path, flags);
  }

  /** Rewrites the file with the live entries only (a new file, renamed over the old one). */
  private compact(): void {
    const lines: string[] = [];
    const entry = (key: string, e: JournalEntry) => {
      lines.push(`+${key} ${e.record}\n`);
      if (e.stdinClosed) lines.push(`=${key}\n`);
    };
    for (const [key, e] of this.live) if (e.earlierAgent) entry(key, e);
    lines.push("@\n"); // also when none is earlier: it tells `load` that launches are recorded
    for (const [key, e] of this.live) if (!e.earlierAgent) entry(key, e);
    const tmp = `${this.path}.tmp`;
    const fd = freshFile(tmp);
    try {
      const data = Buffer.from(lines.join(""));
      for (let at = 0; at < data.length; ) at += writeSync(fd, data, at);
    } finally {
      closeSync(fd);
    }
    try {
      renameSync(tmp, this.path);
    } catch (err) {
      // A directory planted at the journal's name (rename cannot replace it): moved aside.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "EISDIR" && code !== "ENOTEMPTY" && code !== "EEXIST") throw err;
      unlinkName(this.path);
      renameSync(tmp, this.path);
    }
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    this.appended = 0;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

/**
 * A new file at `path` (O_CREAT|O_EXCL|O_NOFOLLOW), whatever a task put
 * there removed first, never written through.
 * @throws ExecDirFileError when something keeps appearing at the name
 */
function freshFile(path: string): number {
  for (let i = 0; i < 3; i++) {
    unlinkName(path);
    try {
      return openSync(path, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
  }
  throw new ExecDirFileError(
    `the task's exec file ${basename(path)} keeps being recreated by a process of the task`,
  );
}
