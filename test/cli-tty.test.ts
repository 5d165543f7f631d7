import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type IPty, spawn as spawnPty } from "node-pty";
import { ExecsClient } from "../src/client/execs.ts";
import { ExecState, TerminationCause } from "../src/gen/taskrouter/v1/execs_pb.ts";
import { BIN, cliEnv, killAll, ROOT, runCli } from "./helpers/cli-run.ts";
import { killSessions, waitGone } from "./helpers/procs.ts";
import { liveInSessions, startRouter, type TestRouter } from "./helpers/router.ts";

const DEADLINE_MS = 20_000;

/** Polls `check` until it returns a value (generous deadline); `what` names it in the error. */
async function until<T>(
  what: string | (() => string),
  check: () => Promise<T | undefined>,
): Promise<T> {
  const deadline = Date.now() + DEADLINE_MS;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${typeof what === "string" ? what : what()}`);
    }
    await sleep(20);
  }
}

/** A shell on a real terminal (node-pty), its screen output kept as text. */
class Terminal {
  text = "";
  readonly term: IPty;
  readonly exited: Promise<number>;

  constructor(script: string, size = { cols: 90, rows: 30 }) {
    this.term = spawnPty("sh", ["-c", script], {
      ...size,
      cwd: ROOT,
      env: cliEnv({ TERM: "xterm" }) as Record<string, string>,
    });
    this.term.onData((d) => {
      this.text += d;
    });
    this.exited = new Promise((resolve) => this.term.onExit((e) => resolve(e.exitCode)));
  }

  /** Waits until `re` matches the screen text after `from`; returns the match. */
  waitFor(re: RegExp, from = 0): Promise<RegExpExecArray> {
    return until(
      () => `${re} on the screen; it shows ${JSON.stringify(this.text.slice(from))}`,
      async () => re.exec(this.text.slice(from)) ?? undefined,
    );
  }

  /** Types `keys` and waits for `re` in what appears after them. */
  async type(keys: string, re: RegExp): Promise<RegExpExecArray> {
    const from = this.text.length;
    this.term.write(keys);
    return this.waitFor(re, from);
  }

  /** The terminal's mode as `stty -g` prints it, read from outside. */
  mode(tty: string): string {
    return execFileSync("stty", ["-F", tty, "-g"], { encoding: "utf8" }).trim();
  }
}

/** The outer script: prints its tty and mode, runs `cmd`, prints its exit code and the mode again. */
function session(cmd: string): string {
  return `echo "TTY=$(tty)"; echo "BEFORE=$(stty -g)"; ${cmd}; echo "rc=$?"; echo "AFTER=$(stty -g)"; read _`;
}

/** The pid of the child of `parent` whose command is `comm`. */
async function childNamed(parent: number, comm: string): Promise<number | undefined> {
  const kids = await readFile(`/proc/${parent}/task/${parent}/children`, "utf8").catch(() => "");
  for (const k of kids.trim().split(/\s+/).filter(Boolean)) {
    const c = await readFile(`/proc/${k}/comm`, "utf8").catch(() => "");
    if (c.trim() === comm) return Number(k);
  }
  return undefined;
}

describe("CLI exec -it on a real terminal", () => {
  let r: TestRouter;
  let execs: ExecsClient;
  const terminals: Terminal[] = [];
  before(async () => {
    r = await startRouter();
    execs = new ExecsClient(r.client);
  });
  after(async () => {
    await killSessions(terminals.map((t) => t.term.pid));
    await killAll();
    await r.close();
  });

  function open(task: string, remote: string, size?: { cols: number; rows: number }): Terminal {
    const cli = `node ${BIN} --server ${r.address} exec -it ${remote.replace("TASK", task)}`;
    const t = new Terminal(session(cli), size);
    terminals.push(t);
    return t;
  }

  /** The running PTY exec of `task` (the CLI's session). */
  async function sessionExec(task: string) {
    return until("the session's exec", async () =>
      (await execs.list(task)).find((e) => e.pty && e.state === ExecState.RUNNING),
    );
  }

  it("types, reads the screen, interrupts with Ctrl-C, resizes, exits 3 and restores the terminal", async () => {
    const task = await r.newTask();
    const t = open(task, "-e 'PS1=PROMPT> ' TASK -- bash --norc --noprofile");
    const tty = (await t.waitFor(/TTY=(\S+)\r\n/))[1] ?? "";
    const modeBefore = (await t.waitFor(/BEFORE=(\S+)\r\n/))[1];
    await t.waitFor(/PROMPT> /);
    const raw = execFileSync("stty", ["-F", tty, "-a"], { encoding: "utf8" });
    for (const flag of ["-icanon", "-echo", "-isig", "-opost"]) {
      assert.match(raw, new RegExp(`(^|\\s)${flag}(\\s|$)`), `local terminal not raw: ${flag}`);
    }

    await t.type("stty size\r", /\r30 90\r\n/); // the size at start
    // One "\r\n" (the remote terminal's): the local one's output processing is off.
    const hi = await t.type("echo hi$((1+1))\r", /\rhi2(\r*)\n/);
    assert.equal(hi[1], "\r");

    const info = await sessionExec(task);
    await t.type("sleep 100\r", /sleep 100\r\n/);
    const sleeper = await until("sleep in the session", async () => {
      for (const pid of await liveInSessions([info.pid])) {
        const comm = await readFile(`/proc/${pid}/comm`, "utf8").catch(() => "");
        if (comm.trim() === "sleep") return pid;
      }
      return undefined;
    });
    t.term.write("\x03"); // Ctrl-C: a byte for the remote terminal, not a signal for the CLI
    assert.deepEqual(await waitGone([sleeper]), [], "Ctrl-C did not stop sleep");
    await t.type("echo back$((2+3))\r", /\rback5\r\n/);

    t.term.resize(100, 40); // SIGWINCH for the CLI → ResizeExec
    await until("the remote size 40x100", async () => {
      const e = await execs.inspect(task, info.execId);
      return e.ptyRows === 40 && e.ptyCols === 100 ? true : undefined;
    });
    await t.type("stty size\r", /\r40 100\r\n/);

    await t.type("exit 3\r", /rc=3\r\n/);
    const modeAfter = (await t.waitFor(/AFTER=(\S+)\r\n/))[1];
    assert.equal(modeAfter, modeBefore, "the local terminal was not restored");
    t.term.write("\r");
    assert.equal(await t.exited, 0);
  });

  it("restores the terminal when the CLI is killed (SIGTERM → 143)", async () => {
    const task = await r.newTask();
    const t = open(task, "TASK -- sleep 1000");
    const tty = (await t.waitFor(/TTY=(\S+)\r\n/))[1] ?? "";
    const modeBefore = (await t.waitFor(/BEFORE=(\S+)\r\n/))[1];
    await sessionExec(task);
    await until("raw mode", async () => (t.mode(tty) !== modeBefore ? true : undefined));
    const cli = await until("the CLI process", () => childNamed(t.term.pid, "node"));
    process.kill(cli, "SIGTERM");
    await t.waitFor(/rc=143\r\n/);
    assert.equal((await t.waitFor(/AFTER=(\S+)\r\n/))[1], modeBefore);
    t.term.write("\r");
    await t.exited;
  });

  it("restores the terminal on an error (the router goes away mid-session → 125)", async () => {
    const gone = await startRouter();
    try {
      const task = await gone.newTask();
      const cli = `node ${BIN} --server ${gone.address} exec -it ${task} -- sleep 1000`;
      const t = new Terminal(session(cli));
      terminals.push(t);
      const tty = (await t.waitFor(/TTY=(\S+)\r\n/))[1] ?? "";
      const modeBefore = (await t.waitFor(/BEFORE=(\S+)\r\n/))[1];
      await until("raw mode", async () => (t.mode(tty) !== modeBefore ? true : undefined));
      await gone.close(); // the CLI's calls fail for good once its retries are spent
      await t.waitFor(/taskrouter: Unavailable: [^\r\n]*\r\nrc=125\r\n/);
      assert.equal((await t.waitFor(/AFTER=(\S+)\r\n/))[1], modeBefore);
      t.term.write("\r");
      await t.exited;
    } finally {
      await gone.close();
    }
  });
});

describe("CLI exec -t without a terminal, and exec ls / kill / inspect", () => {
  let r: TestRouter;
  let execs: ExecsClient;
  let task: string;
  before(async () => {
    r = await startRouter();
    execs = new ExecsClient(r.client);
    task = await r.newTask();
  });
  after(async () => {
    await killAll();
    await r.close();
  });
  const cli = (...args: string[]) => runCli(["--server", r.address, ...args]);

  it("refuses -t when stdin is not a TTY (125, clear message, nothing started)", async () => {
    for (const flags of [["-t"], ["-it"]]) {
      const res = await cli("exec", ...flags, task, "--", "true");
      assert.equal(res.code, 125);
      assert.match(res.stderr, /the input device is not a TTY/);
    }
    assert.deepEqual(await execs.list(task), []);
  });

  it("lists, kills and inspects execs", async () => {
    const id = await r.client.start(task, ["sleep", "100"], { stdout: "pipe" });
    const ls = await cli("exec", "ls", task);
    assert.equal(ls.code, 0, ls.stderr);
    const [header, ...rows] = ls.stdout.trimEnd().split("\n");
    assert.match(
      header ?? "",
      /^EXEC ID\s+PID\s+STATE\s+EXIT\s+CAUSE\s+PTY\s+CONTAINER\s+STARTED\s+COMMAND$/,
    );
    const row = rows.find((l) => l.startsWith(id)) ?? "";
    assert.match(row, /\srunning\s+-\s+-\s+-\s+main\s.*\ssleep 100$/);

    const kill = await cli("exec", "kill", "--signal", "TERM", task, id);
    assert.equal(kill.code, 0, kill.stderr);
    assert.deepEqual(await r.client.wait(task, id), { signal: 15 });

    const inspect = await cli("exec", "inspect", task, id);
    assert.equal(inspect.code, 0, inspect.stderr);
    const json = JSON.parse(inspect.stdout) as Record<string, unknown>;
    assert.equal(json.execId, id);
    assert.deepEqual(json.argv, ["sleep", "100"]);
    assert.equal(json.state, "exited");
    assert.equal(json.exitSignal, 15);
    assert.equal(json.exitCode, null);
    assert.equal(json.cause, "killed");
    assert.equal((await execs.inspect(task, id)).cause, TerminationCause.KILLED);

    const again = await cli("exec", "kill", task, id);
    assert.equal(again.code, 125);
    assert.match(again.stderr, /FailedPrecondition: .*exited/);
    const usage = await cli("exec", "inspect", task);
    assert.equal(usage.code, 125);
    assert.match(usage.stderr, /usage: exec inspect TASK EXEC_ID/);
  });

  it("runs a command in a task named like a verb with `exec ls -- CMD`", async () => {
    await r.newTask("ls");
    const res = await cli("exec", "ls", "--", "echo", "hi");
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout, "hi\n");
  });
});
