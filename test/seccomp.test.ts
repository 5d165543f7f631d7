import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { arch, tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { pino } from "pino";
import { RouterClient } from "../src/client/client.ts";
import { DEFAULT_CONFIG, startDaemon } from "../src/daemon.ts";
import {
  TaskExecStartRequestSchema,
  TaskExecStdoutConfig,
} from "../src/gen/modal_proto/task_command_router_pb.ts";
import { DEFAULT_CAPS } from "../src/runtime/runc/oci-spec.ts";
import { TASK_SECCOMP_CAPS } from "../src/runtime/runc/runc-runtime.ts";
import {
  defaultSeccomp,
  type OciSeccomp,
  parseProfile,
  renderProfile,
} from "../src/runtime/runc/seccomp.ts";
import { runCli } from "./helpers/cli-run.ts";
import { collect, startRouter, type TestRouter } from "./helpers/router.ts";
import {
  OCI_RUNTIMES,
  RUNSC,
  removeDataDir,
  runcSkipReason,
  runIn,
  startRuncRouter,
  tempDataDir,
} from "./helpers/runc.ts";

// The seccomp filter of runc tasks (`serve --seccomp`): Docker's default profile,
// unconfined, or a profile file; with runc, crun and runsc.

const X64 = arch() === "x64";
const PERL = existsSync("/usr/bin/perl");
const STRACE = existsSync("/usr/bin/strace");

/**
 * `perl -e ... NAME,NR,ARG...`: makes each raw syscall (x86_64 numbers) and
 * prints `NAME ERRNO` (0: it succeeded).
 */
const SYSCALLS = `perl -e 'for (@ARGV) { my ($n, $nr, @a) = split /,/; my $r = syscall($nr + 0, map { $_ + 0 } @a); print "$n ", ($r < 0 ? $! + 0 : 0), "\\n" }'`;
/** What the default profile refuses (x86_64): unshare(CLONE_NEWUSER), keyctl, sockets of AF_VSOCK and AF_ALG, personality(ADDR_NO_RANDOMIZE), clone3. */
const REFUSED = [
  "unshare,272,268435456",
  "keyctl,250,0,-3,1",
  "vsock,41,40,1,0",
  "alg,41,38,5,0",
  "personality,135,262144",
  "clone3,435,0,0",
];
/** ...and what it allows: an AF_INET socket, AF_UNIX, the personality query. */
const ALLOWED = ["inet,41,2,1,0", "unix,41,1,1,0", "persona_query,135,4294967295"];

/** `Seccomp:` of a /proc/PID/status. */
const SECCOMP_OF = (pid: string) => `sed -n 's/^Seccomp:[[:space:]]*//p' /proc/${pid}/status`;

/** A loopback TCP round trip (perl-base: Debian's essential perl). */
const LOOPBACK = `perl -MIO::Socket::INET -e '
  my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1", LocalPort => 0) or die "listen: $!";
  my $port = $s->sockport;
  if (!fork) { my $c = IO::Socket::INET->new("127.0.0.1:$port") or die "connect: $!"; print $c "ping\\n"; exit 0 }
  my $a = $s->accept or die "accept: $!"; print scalar <$a>; wait'`;

/** TaskExecStart with `runtime_debug` (the typed client has no option for it). */
async function startDebug(r: TestRouter, taskId: string, execId: string, argv: string[]) {
  await r.client.unary(
    "taskExecStart",
    create(TaskExecStartRequestSchema, {
      taskId,
      execId,
      commandArgs: argv,
      stdoutConfig: TaskExecStdoutConfig.PIPE,
      runtimeDebug: true,
    }),
  );
}

/** Runs a runtime_debug exec to its end; its status and stdout (stderr merged by `2>&1`). */
async function runDebug(r: TestRouter, taskId: string, execId: string, script: string) {
  await startDebug(r, taskId, execId, ["sh", "-c", `${script} 2>&1`]);
  const status = await r.client.wait(taskId, execId);
  const stdout = (await collect(r.client.read(taskId, execId, "stdout"))).toString();
  return { status, stdout };
}

/** `sh -c SCRIPT 2>&1` in the task: status and output. */
async function sh(r: TestRouter, taskId: string, script: string) {
  const res = await runIn(r, taskId, ["sh", "-c", `${script} 2>&1`]);
  return { status: res.status, stdout: res.stdout };
}

/** Parses `NAME ERRNO` lines. */
function errnos(out: string): Record<string, number> {
  return Object.fromEntries(
    out
      .trim()
      .split("\n")
      .map((l) => l.split(" "))
      .map(([n = "", e = ""]) => [n, Number(e)]),
  );
}

const tmpDirs: string[] = [];
/** Writes `content` to a fresh temp file and returns its path. */
async function tempFile(name: string, content: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "taskrouter-seccomp-"));
  tmpDirs.push(dir);
  const path = join(dir, name);
  await writeFile(path, content);
  return path;
}
after(async () => {
  for (const d of tmpDirs) await rm(d, { recursive: true, force: true });
});

/** A profile file: everything allowed but mkdir, which fails with EACCES. */
const NO_MKDIR = JSON.stringify({
  defaultAction: "SCMP_ACT_ALLOW",
  syscalls: [{ names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO", errnoRet: 13 }],
});

for (const { label, binary } of OCI_RUNTIMES) {
  const ociSkip = await runcSkipReason(binary);
  // runsc filters the task's init (and its children) but not, before gVisor's PR
  // #12692 (2026-03), the processes of `runsc exec`: checked on /proc/1 there.
  const sandboxed = binary === RUNSC;

  describe(`seccomp: the default profile (${label})`, { skip: ociSkip }, () => {
    let r: TestRouter;
    let task: string;
    /** Whether this runtime's execs run under the task's filter. */
    let execFiltered = true;
    before(async () => {
      r = await startRuncRouter({ ociRuntime: binary, allowRuntimeDebug: true });
      task = await r.newTask();
    });
    after(() => r?.close());

    it("the task runs in seccomp filter mode (Seccomp: 2)", async (t) => {
      const res = await sh(r, task, `${SECCOMP_OF("1")}; ${SECCOMP_OF("self")}`);
      assert.deepEqual(res.status, { code: 0 });
      const [init, self] = res.stdout.trim().split("\n");
      assert.equal(init, "2", "the init is filtered");
      if (sandboxed) {
        assert.match(self ?? "", /^[02]$/);
        execFiltered = self === "2";
        if (!execFiltered) t.diagnostic(`${label}: runsc exec processes run without the filter`);
      } else {
        assert.equal(self, "2", "an exec is filtered");
      }
    });

    it("user namespaces, keyctl, AF_VSOCK/AF_ALG sockets, personality flags are refused", {
      skip: !X64 || !PERL ? "needs x86_64 and /usr/bin/perl" : undefined,
    }, async (t) => {
      if (!execFiltered) {
        t.skip("this runsc does not filter exec processes");
        return;
      }
      const un = await sh(r, task, "unshare -Urm true");
      assert.notDeepEqual(un.status, { code: 0 });
      assert.match(un.stdout, /Operation not permitted/);
      const res = await sh(r, task, `${SYSCALLS} ${[...REFUSED, ...ALLOWED].join(" ")}`);
      assert.deepEqual(res.status, { code: 0 }, res.stdout);
      assert.deepEqual(errnos(res.stdout), {
        unshare: 1, // EPERM
        keyctl: 1,
        vsock: 1,
        alg: 1,
        personality: 1,
        clone3: 38, // ENOSYS: libc falls back to clone, which the filter can check
        inet: 0,
        unix: 0,
        persona_query: 0,
      });
    });

    it("ordinary commands work: shell, pipes, coreutils, files, processes, loopback TCP", async () => {
      const res = await sh(
        r,
        task,
        [
          "set -e",
          "echo hello | tr a-z A-Z | grep HELLO",
          "head -c 4096 /dev/urandom | sha256sum | wc -c",
          "mkdir -p /tmp/a/b && echo x > /tmp/a/b/f && cat /tmp/a/b/f && mv /tmp/a/b/f /tmp/a/g",
          "ln -s /tmp/a/g /tmp/a/l && cat /tmp/a/l && rm -r /tmp/a",
          "id -u; date +%Y >/dev/null; sleep 0.1 & wait; (exit 3) || echo sub=$?",
          "env | grep -c ^HOME=",
          PERL ? LOOPBACK : "echo ping",
        ].join("\n"),
      );
      assert.deepEqual(res.status, { code: 0 }, res.stdout);
      assert.equal(res.stdout, "HELLO\n68\nx\nx\n0\nsub=3\n1\nping\n");
    });

    it("a runtime_debug exec can ptrace (strace, PTRACE_SEIZE); an ordinary one cannot seize it", {
      skip: PERL ? undefined : "needs /usr/bin/perl",
    }, async (t) => {
      if (STRACE) {
        const st = await runDebug(r, task, "strace", "strace -f -o /dev/null true && echo traced");
        assert.deepEqual(st, { status: { code: 0 }, stdout: "traced\n" });
      } else t.diagnostic("strace is not installed: the strace half of this test is not run");
      // A process holding CAP_SYS_PTRACE (a runtime_debug one) is only ptraceable with it.
      await startDebug(r, task, "sleeper", ["sh", "-c", "echo $$ > /tmp/dbg.pid; exec sleep 60"]);
      const seize = `until [ -s /tmp/dbg.pid ]; do sleep 0.05; done; ${SYSCALLS} seize,101,16902,$(cat /tmp/dbg.pid),0,0`;
      const dbg = await runDebug(r, task, "seize", seize);
      assert.deepEqual(dbg, { status: { code: 0 }, stdout: "seize 0\n" });
      const plain = await sh(r, task, seize);
      assert.deepEqual(plain, { status: { code: 0 }, stdout: "seize 1\n" });
      await sh(r, task, "kill -9 $(cat /tmp/dbg.pid)");
      assert.deepEqual(await r.client.wait(task, "sleeper"), { signal: 9 });
    });
  });

  describe(`seccomp: unconfined, profile files, adoption (${label})`, { skip: ociSkip }, () => {
    it("--seccomp unconfined: no filter (Seccomp: 0), unshare -Urm works again", async (t) => {
      const r = await startRuncRouter({ ociRuntime: binary, seccomp: "unconfined" });
      try {
        const task = await r.newTask();
        const res = await sh(r, task, `${SECCOMP_OF("1")}; ${SECCOMP_OF("self")}`);
        assert.equal(res.stdout, "0\n0\n");
        // gVisor refuses unshare -m's propagation change itself.
        if (!sandboxed)
          assert.deepEqual((await sh(r, task, "unshare -Urm true")).status, { code: 0 });
        else t.diagnostic("gVisor refuses unshare -m: the unshare check is not run");
      } finally {
        await r.close();
      }
    });

    it("--seccomp FILE applies that profile", async (t) => {
      const file = await tempFile("no-mkdir.json", NO_MKDIR);
      const r = await startRuncRouter({ ociRuntime: binary, seccomp: file });
      try {
        const task = await r.newTask();
        const res = await sh(r, task, SECCOMP_OF("1"));
        assert.equal(res.stdout, "2\n");
        if (sandboxed) {
          // Its exec processes are not filtered (see above).
          t.diagnostic("gVisor: exec processes are not filtered, the mkdir check is not run");
          return;
        }
        const mk = await sh(r, task, `${SECCOMP_OF("self")}; mkdir /tmp/d`);
        assert.notDeepEqual(mk.status, { code: 0 });
        assert.match(mk.stdout, /^2\n.*Permission denied/s);
        assert.deepEqual((await sh(r, task, "unshare -Urm true")).status, { code: 0 });
      } finally {
        await r.close();
      }
    });

    it("an adopted running task keeps the filter it was created with", async () => {
      const dataDir = await tempDataDir();
      const config = {
        ...DEFAULT_CONFIG,
        listen: "127.0.0.1:0",
        dataDir,
        auth: { mode: "none" as const },
        runtime: "runc" as const,
        ociRuntime: binary,
      };
      const log = pino({ level: "silent" });
      try {
        const d1 = await startDaemon({ ...config, seccomp: "unconfined" }, log);
        try {
          await d1.tasks.create("old");
        } finally {
          await d1.close();
        }
        const d2 = await startDaemon(config, log);
        const c = new RouterClient(d2.address);
        try {
          const probe = async (id: string) =>
            (await runIn({ client: c }, id, ["sh", "-c", SECCOMP_OF(sandboxed ? "1" : "self")]))
              .stdout;
          assert.equal(await probe("old"), "0\n", "adopted: still unconfined");
          await d2.tasks.create("new");
          assert.equal(await probe("new"), "2\n", "created now: the default profile");
          await d2.tasks.terminate("old");
          await d2.tasks.terminate("new");
        } finally {
          c.close();
          await d2.close();
        }
      } finally {
        await removeDataDir(dataDir, binary);
      }
    });
  });
}

describe("seccomp: profile rendering and checks", () => {
  const amd64 = { arch: "amd64", caps: TASK_SECCOMP_CAPS, kernel: "6.1.0-18-amd64" };
  const allowed = (p: OciSeccomp, name: string) =>
    (p.syscalls ?? []).filter((s) => s.names.includes(name));

  it("the default: Docker's semantics for x86_64 and the task's capabilities", () => {
    const p = defaultSeccomp(amd64);
    assert.equal(p.defaultAction, "SCMP_ACT_ERRNO");
    assert.equal(p.defaultErrnoRet, 1);
    assert.deepEqual(p.architectures, ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
    const json = JSON.stringify(p);
    assert.doesNotMatch(json, /includes|excludes|archMap/);
    for (const name of [
      "read",
      "execve",
      "arch_prctl",
      "ptrace",
      "chroot",
      "kcmp",
      "pidfd_getfd",
    ]) {
      assert.equal(allowed(p, name)[0]?.action, "SCMP_ACT_ALLOW", name);
    }
    for (const name of [
      "unshare",
      "setns",
      "mount",
      "keyctl",
      "add_key",
      "bpf",
      "reboot",
      "kexec_load",
    ]) {
      assert.deepEqual(allowed(p, name), [], name);
    }
    assert.deepEqual(allowed(p, "clone"), [
      {
        names: ["clone"],
        action: "SCMP_ACT_ALLOW",
        args: [{ index: 0, value: 0x7e020000, op: "SCMP_CMP_MASKED_EQ" }],
      },
    ]);
    assert.deepEqual(allowed(p, "clone3"), [
      { names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: 38 },
    ]);
    assert.deepEqual(
      allowed(p, "personality").map((s) => s.args?.[0]?.value),
      [0, 8, 0x20000, 0x20008, 0xffffffff],
    );
    assert.deepEqual(allowed(p, "arm_fadvise64_64"), []);
  });

  it("conditions follow the architecture, the capabilities and the kernel", () => {
    const arm = defaultSeccomp({ ...amd64, caps: DEFAULT_CAPS, arch: "arm64" });
    assert.deepEqual(arm.architectures, ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]);
    assert.deepEqual(allowed(arm, "arch_prctl"), []);
    assert.equal(allowed(arm, "cacheflush").length, 1);
    // Without CAP_SYS_PTRACE: ptrace (kernel >= 4.8), but not kcmp.
    assert.equal(allowed(arm, "ptrace").length, 1);
    assert.deepEqual(allowed(arm, "kcmp"), []);
    const old = defaultSeccomp({ ...amd64, caps: DEFAULT_CAPS, kernel: "4.4.0" });
    assert.deepEqual(allowed(old, "ptrace"), []);
    const admin = defaultSeccomp({ ...amd64, caps: [...DEFAULT_CAPS, "CAP_SYS_ADMIN"] });
    assert.deepEqual(
      allowed(admin, "clone").map((s) => s.args),
      [undefined],
      "clone unrestricted",
    );
    assert.deepEqual(allowed(admin, "clone3")[0]?.action, "SCMP_ACT_ALLOW");
    assert.equal(allowed(admin, "unshare").length, 1);
    const other = defaultSeccomp({ ...amd64, arch: "sparc" });
    assert.equal(other.architectures, undefined, "unknown arch: the native one only");
  });

  it("a profile file may be an OCI object or in Docker's format (rendered the same way)", () => {
    const oci = parseProfile(NO_MKDIR, "f");
    assert.deepEqual(renderProfile(oci, amd64), JSON.parse(NO_MKDIR));
    const docker = parseProfile(
      JSON.stringify({
        defaultAction: "SCMP_ACT_ERRNO",
        archMap: [{ architecture: "SCMP_ARCH_X86_64", subArchitectures: ["SCMP_ARCH_X86"] }],
        syscalls: [
          { name: "read", action: "SCMP_ACT_ALLOW", comment: "a single name" },
          { names: ["mount"], action: "SCMP_ACT_ALLOW", includes: { caps: ["CAP_SYS_ADMIN"] } },
          { names: ["ptrace"], action: "SCMP_ACT_ALLOW", includes: { caps: ["CAP_SYS_PTRACE"] } },
          { names: ["arch_prctl"], action: "SCMP_ACT_ALLOW", excludes: { arches: ["amd64"] } },
          { names: ["kcmp"], action: "SCMP_ACT_ALLOW", excludes: { minKernel: "9.0" } },
        ],
      }),
      "f",
    );
    assert.deepEqual(renderProfile(docker, amd64), {
      defaultAction: "SCMP_ACT_ERRNO",
      architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
      syscalls: [
        { names: ["read"], action: "SCMP_ACT_ALLOW" },
        { names: ["ptrace"], action: "SCMP_ACT_ALLOW" },
        { names: ["kcmp"], action: "SCMP_ACT_ALLOW" },
      ],
    });
  });

  it("a malformed profile is refused with the field at fault", () => {
    const bad: [unknown, RegExp][] = [
      ["{", /not JSON/],
      [[], /the profile: not an object/],
      [{}, /defaultAction: undefined is none of/],
      [{ defaultAction: "SCMP_ACT_NOTIFY" }, /defaultAction: "SCMP_ACT_NOTIFY" is none of/],
      [{ defaultAction: "SCMP_ACT_ALLOW", listenerPath: "/x" }, /unknown field "listenerPath"/],
      [{ defaultAction: "SCMP_ACT_ALLOW", architectures: ["x86_64"] }, /architectures: not a list/],
      [
        { defaultAction: "SCMP_ACT_ALLOW", architectures: ["SCMP_ARCH_VAX"] },
        /unknown "SCMP_ARCH_VAX"/,
      ],
      [{ defaultAction: "SCMP_ACT_ALLOW", flags: ["SECCOMP_FILTER_FLAG_X"] }, /flags: unknown/],
      [{ defaultAction: "SCMP_ACT_ALLOW", syscalls: {} }, /syscalls: not a list/],
      [
        { defaultAction: "SCMP_ACT_ALLOW", syscalls: [{ action: "SCMP_ACT_ERRNO" }] },
        /syscalls\[0\]\.names/,
      ],
      [
        { defaultAction: "SCMP_ACT_ALLOW", syscalls: [{ names: [], action: "SCMP_ACT_ERRNO" }] },
        /syscalls\[0\]\.names: empty/,
      ],
      [
        { defaultAction: "SCMP_ACT_ALLOW", syscalls: [{ names: ["mkdir"], action: "DENY" }] },
        /syscalls\[0\]\.action: "DENY" is none of/,
      ],
      [
        {
          defaultAction: "SCMP_ACT_ALLOW",
          syscalls: [
            {
              names: ["mkdir"],
              action: "SCMP_ACT_ERRNO",
              args: [{ index: 6, value: 1, op: "SCMP_CMP_EQ" }],
            },
          ],
        },
        /syscalls\[0\]\.args\[0\]\.index: not an integer from 0 to 5/,
      ],
      [
        {
          defaultAction: "SCMP_ACT_ALLOW",
          syscalls: [
            {
              names: ["mkdir"],
              action: "SCMP_ACT_ERRNO",
              args: [{ index: 0, value: 1, op: "EQ" }],
            },
          ],
        },
        /args\[0\]\.op: "EQ" is none of/,
      ],
      [
        {
          defaultAction: "SCMP_ACT_ALLOW",
          syscalls: [{ names: ["x"], action: "SCMP_ACT_ERRNO", errnoRet: -1 }],
        },
        /errnoRet: not an integer/,
      ],
    ];
    for (const [profile, msg] of bad) {
      const text = typeof profile === "string" ? profile : JSON.stringify(profile);
      assert.throws(
        () => parseProfile(text, "p.json"),
        (err: Error) => {
          assert.match(err.message, /^seccomp profile p\.json: /);
          assert.match(err.message, msg);
          return true;
        },
      );
    }
  });

  it("the router refuses to start with a malformed or missing profile file, whatever the runtime", async () => {
    const file = await tempFile("bad.json", '{"defaultAction": "SCMP_ACT_ALLOW", "syscals": []}');
    for (const seccomp of [file, join(tmpdir(), "taskrouter-no-such-profile.json")]) {
      await assert.rejects(startRouter({ runtime: "host", seccomp }), (err: Error) => {
        assert.match(err.message, /^seccomp profile .*(unknown field "syscals"|ENOENT)/);
        return true;
      });
    }
    const dataDir = join(tmpDirs.at(-1) ?? tmpdir(), "data");
    const res = await runCli([
      "serve",
      ...["--listen", "127.0.0.1:0", "--auth", "none", "--data-dir", dataDir, "--seccomp", file],
    ]);
    assert.equal(res.code, 1);
    assert.match(
      res.stderr,
      /^taskrouter: cannot start: seccomp profile .*bad\.json: the profile: unknown field "syscals"\n$/,
    );
    assert.equal(res.stdout, "");
    assert.equal(existsSync(dataDir), false, "nothing was made");
  });
});
