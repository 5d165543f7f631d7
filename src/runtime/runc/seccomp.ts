import { readFileSync } from "node:fs";
import { arch as nodeArch, release } from "node:os";

/**
 * The seccomp filter of runc tasks (OCI `linux.seccomp`). `serve --seccomp`
 * picks it: `default` (our rendition of Docker's default profile), `unconfined`
 * (none), or a FILE holding an OCI `linux.seccomp` object (Docker's profile
 * format, with `archMap`/`includes`/`excludes`, is accepted too).
 *
 * A profile is rendered the way Docker renders its own: rules whose
 * `includes`/`excludes` name architectures, capabilities or a minimum kernel
 * are kept or dropped for this machine and the task's capability set, and
 * `archMap` becomes the native architecture plus its sub-architectures. The
 * filter is the container's, so every exec of a task shares it: it is rendered
 * for the capabilities any of them may hold (TASK_SECCOMP_CAPS).
 */

export interface OciSeccompArg {
  index: number;
  value: number;
  valueTwo?: number;
  op: string;
}

export interface OciSyscall {
  names: string[];
  action: string;
  errnoRet?: number;
  args?: OciSeccompArg[];
}

export interface OciSeccomp {
  defaultAction: string;
  defaultErrnoRet?: number;
  architectures?: string[];
  flags?: string[];
  syscalls?: OciSyscall[];
}

/** The condition of a rule in Docker's format: all of it must hold (includes) or any (excludes). */
interface Cond {
  arches?: string[];
  caps?: string[];
  minKernel?: string;
}

/** A rule of Docker's profile format: an OCI rule plus conditions. */
interface ProfileRule extends OciSyscall {
  includes?: Cond;
  excludes?: Cond;
}

/** A profile in Docker's format (an OCI object is one without conditions). */
export interface Profile extends Omit<OciSeccomp, "syscalls"> {
  archMap?: { architecture: string; subArchitectures: string[] | null }[];
  syscalls?: ProfileRule[];
}

// ---- Docker's default profile (moby/profiles seccomp/default.json, 2026-05), as data ----

/** Space-separated names → list. */
const w = (s: string): string[] => s.trim().split(/\s+/);

/** Allowed whatever the capabilities: Docker's unconditional list. */
const ALLOWED = `
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2
dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat
fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64
fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64
futex_wait futex_waitv futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32
geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp
getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit
get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday getuid
getuid32 getxattr getxattrat inotify_add_watch inotify_init inotify_init1 inotify_rm_watch
io_cancel ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set
io_setup io_submit ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown
lchown32 lgetxattr link linkat listen listmount listxattr listxattrat llistxattr _llseek
lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack membarrier memfd_create
memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect
mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync munlock munlockall
munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open
pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl
pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev
pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg
remap_file_pages removexattr removexattrat rename renameat renameat2 restart_syscall riscv_hwprobe
rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr
sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler
sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop semtimedop_time64 send
sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid setfsuid32 setgid
setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid
setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid setsockopt
set_thread_area set_tid_address setuid setuid32 setxattr setxattrat shmat shmctl shmdt shmget
shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall socketpair splice stat
stat64 statfs statfs64 statmount statx symlink symlinkat sync sync_file_range syncfs sysinfo tee
tgkill time timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat uretprobe
utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev`;

/** CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET: clone may set none of them. */
const CLONE_NS_FLAGS = 0x7e020000;
const ALLOW = "SCMP_ACT_ALLOW";

/** A rule allowing the space-separated `names`, with `extra` (arguments, conditions). */
function allow(names: string, extra: Partial<ProfileRule> = {}): ProfileRule {
  return { names: w(names), action: ALLOW, ...extra };
}
const arg0 = (op: string, value: number): OciSeccompArg[] => [{ index: 0, value, op }];

const DEFAULT_PROFILE: Profile = {
  defaultAction: "SCMP_ACT_ERRNO",
  defaultErrnoRet: 1, // EPERM
  archMap: [
    ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
    ["SCMP_ARCH_RISCV64"],
    ["SCMP_ARCH_LOONGARCH64"],
  ].map(([architecture = "", ...sub]) => ({ architecture, subArchitectures: sub })),
  syscalls: [
    allow(ALLOWED),
    // Since 4.8 the filter runs again after a tracer changed a syscall: ptrace cannot bypass it.
    allow("process_vm_readv process_vm_writev ptrace", { includes: { minKernel: "4.8" } }),
    // Every socket family but AF_ALG (38) and AF_VSOCK (40).
    allow("socket", { args: arg0("SCMP_CMP_LT", 38) }),
    allow("socket", { args: arg0("SCMP_CMP_EQ", 39) }),
    allow("socket", { args: arg0("SCMP_CMP_GT", 40) }),
    // personality: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and the query 0xffffffff.
    ...[0, 8, 0x20000, 0x20008, 0xffffffff].map((v) =>
      allow("personality", { args: arg0("SCMP_CMP_EQ", v) }),
    ),
    allow("sync_file_range2 swapcontext", { includes: { arches: ["ppc64le"] } }),
    allow("arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls", {
      includes: { arches: ["arm", "arm64"] },
    }),
    allow("arch_prctl", { includes: { arches: ["amd64", "x32"] } }),
    allow("modify_ldt", { includes: { arches: ["amd64", "x32", "x86"] } }),
    allow("s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr", {
      includes: { arches: ["s390", "s390x"] },
    }),
    allow("riscv_flush_icache", { includes: { arches: ["riscv64"] } }),
    allow("open_by_handle_at", { includes: { caps: ["CAP_DAC_READ_SEARCH"] } }),
    allow(
      `bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie
       lsm_get_self_attr lsm_list_modules lsm_set_self_attr mount mount_setattr move_mount
       open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname setns syslog
       umount umount2 unshare`,
      { includes: { caps: ["CAP_SYS_ADMIN"] } },
    ),
    // Without CAP_SYS_ADMIN: clone only without namespace flags (s390 has them in arg 1)...
    allow("clone", {
      args: arg0("SCMP_CMP_MASKED_EQ", CLONE_NS_FLAGS),
      excludes: { caps: ["CAP_SYS_ADMIN"], arches: ["s390", "s390x"] },
    }),
    allow("clone", {
      args: [{ index: 1, value: CLONE_NS_FLAGS, op: "SCMP_CMP_MASKED_EQ" }],
      includes: { arches: ["s390", "s390x"] },
      excludes: { caps: ["CAP_SYS_ADMIN"] },
    }),
    // ...and clone3 (whose flags a filter cannot see) says ENOSYS: libc falls back to clone.
    {
      names: ["clone3"],
      action: "SCMP_ACT_ERRNO",
      errnoRet: 38,
      excludes: { caps: ["CAP_SYS_ADMIN"] },
    },
    ...(
      [
        ["reboot", "CAP_SYS_BOOT"],
        ["chroot", "CAP_SYS_CHROOT"],
        ["delete_module init_module finit_module", "CAP_SYS_MODULE"],
        ["acct", "CAP_SYS_PACCT"],
        [
          "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
          "CAP_SYS_PTRACE",
        ],
        ["iopl ioperm", "CAP_SYS_RAWIO"],
        ["settimeofday stime clock_settime clock_settime64", "CAP_SYS_TIME"],
        ["vhangup", "CAP_SYS_TTY_CONFIG"],
        ["get_mempolicy mbind set_mempolicy set_mempolicy_home_node", "CAP_SYS_NICE"],
        ["syslog", "CAP_SYSLOG"],
        ["bpf", "CAP_BPF"],
        ["perf_event_open", "CAP_PERFMON"],
      ] as const
    ).map(([names, cap]) => allow(names, { includes: { caps: [cap] } })),
  ],
};

// ---- rendering ----

/** What a profile is rendered for. */
export interface RenderTarget {
  /** Docker's (libseccomp's) name of the native architecture: amd64, arm64, ... */
  arch: string;
  /** The capability set (bounding) of the task's processes. */
  caps: readonly string[];
  /** The kernel release, e.g. "6.1.0-18-amd64". */
  kernel: string;
}

/** Node's `os.arch()` → Docker's native architecture name. */
const NATIVE_ARCH: Record<string, string> = {
  x64: "amd64",
  ia32: "x86",
  arm: "arm",
  arm64: "arm64",
  s390x: "s390x",
  ppc64: "ppc64le",
  riscv64: "riscv64",
  loong64: "loongarch64",
};
/** Docker's native architecture name → the SCMP_ARCH_ of archMap. */
const SCMP_ARCH: Record<string, string> = {
  amd64: "SCMP_ARCH_X86_64",
  x86: "SCMP_ARCH_X86",
  arm: "SCMP_ARCH_ARM",
  arm64: "SCMP_ARCH_AARCH64",
  s390x: "SCMP_ARCH_S390X",
  ppc64le: "SCMP_ARCH_PPC64LE",
  riscv64: "SCMP_ARCH_RISCV64",
  loongarch64: "SCMP_ARCH_LOONGARCH64",
};

/** This machine, for tasks holding `caps`. */
export function hostTarget(caps: readonly string[]): RenderTarget {
  return { arch: NATIVE_ARCH[nodeArch()] ?? nodeArch(), caps, kernel: release() };
}

/** Whether kernel release `kernel` is at least `min` ("major.minor"). */
function kernelAtLeast(kernel: string, min: string): boolean {
  const [a = 0, b = 0] = kernel.split(/[.-]/).map(Number);
  const [x = 0, y = 0] = min.split(".").map(Number);
  return a > x || (a === x && b >= y);
}

/** Docker's rendering: keep the rules whose conditions hold on `t`, drop the conditions. */
export function renderProfile(p: Profile, t: RenderTarget): OciSeccomp {
  const { archMap, syscalls, ...rest } = p;
  const out: OciSeccomp = { ...rest };
  const native = archMap?.find((a) => a.architecture === SCMP_ARCH[t.arch]);
  if (native) out.architectures = [native.architecture, ...(native.subArchitectures ?? [])];
  if (!syscalls) return out;
  const holds = (c: Cond, all: boolean): boolean => {
    const tests: boolean[] = [];
    if (c.arches?.length) tests.push(c.arches.includes(t.arch));
    if (c.caps?.length) {
      const has = c.caps.map((cap) => t.caps.includes(cap));
      tests.push(all ? has.every(Boolean) : has.some(Boolean));
    }
    if (c.minKernel) tests.push(kernelAtLeast(t.kernel, c.minKernel));
    return all ? tests.every(Boolean) : tests.some(Boolean);
  };
  out.syscalls = syscalls
    .filter(
      (r) => (!r.includes || holds(r.includes, true)) && !(r.excludes && holds(r.excludes, false)),
    )
    .map(({ includes: _i, excludes: _e, ...rule }) => rule);
  return out;
}

/** Our rendition of Docker's default profile, rendered for `t`. */
export function defaultSeccomp(t: RenderTarget): OciSeccomp {
  return renderProfile(DEFAULT_PROFILE, t);
}

// ---- `--seccomp FILE`: parsing and checks ----

const ACTIONS = new Set(
  w(`SCMP_ACT_KILL SCMP_ACT_KILL_PROCESS SCMP_ACT_KILL_THREAD SCMP_ACT_TRAP SCMP_ACT_ERRNO
     SCMP_ACT_TRACE SCMP_ACT_ALLOW SCMP_ACT_LOG`),
);
const OPS = new Set(
  w("SCMP_CMP_NE SCMP_CMP_LT SCMP_CMP_LE SCMP_CMP_EQ SCMP_CMP_GE SCMP_CMP_GT SCMP_CMP_MASKED_EQ"),
);
const FLAGS = new Set(
  w(`SECCOMP_FILTER_FLAG_TSYNC SECCOMP_FILTER_FLAG_LOG SECCOMP_FILTER_FLAG_SPEC_ALLOW
     SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`),
);

/** Throws `where: what` for a value that is not what a profile needs. */
class Checker {
  constructor(private readonly source: string) {}
  fail(where: string, what: string): never {
    throw new Error(`seccomp profile ${this.source}: ${where}: ${what}`);
  }
  obj(v: unknown, where: string, keys: string[]): Record<string, unknown> {
    if (typeof v !== "object" || v === null || Array.isArray(v)) this.fail(where, "not an object");
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      if (!keys.includes(k)) this.fail(where, `unknown field ${JSON.stringify(k)}`);
    }
    return o;
  }
  strings(v: unknown, where: string, re: RegExp, allowed?: Set<string>): string[] {
    if (!Array.isArray(v) || v.some((s) => typeof s !== "string" || !re.test(s))) {
      this.fail(where, `not a list of names like ${re.source}`);
    }
    const bad = allowed && (v as string[]).find((s) => !allowed.has(s));
    if (bad) this.fail(where, `unknown ${JSON.stringify(bad)}`);
    return v as string[];
  }
  list(v: unknown, where: string, max = Number.POSITIVE_INFINITY): unknown[] {
    if (!Array.isArray(v) || v.length > max) this.fail(where, "not a list");
    return v;
  }
  uint(v: unknown, where: string, max = Number.MAX_SAFE_INTEGER): number {
    if (!Number.isSafeInteger(v) || (v as number) < 0 || (v as number) > max) {
      this.fail(where, `not an integer from 0 to ${max}`);
    }
    return v as number;
  }
  oneOf(v: unknown, where: string, allowed: Set<string>): string {
    if (typeof v !== "string" || !allowed.has(v)) {
      this.fail(where, `${JSON.stringify(v)} is none of ${[...allowed].join(" ")}`);
    }
    return v;
  }
}

const TOP_KEYS = w("defaultAction defaultErrnoRet architectures archMap flags syscalls");
const RULE_KEYS = w("names name action errnoRet args includes excludes comment");
const ARCH_RE = /^SCMP_ARCH_[A-Z0-9_]+$/;
/** libseccomp's architectures. */
const ARCHES = new Set(
  w(`X86 X86_64 X32 ARM AARCH64 MIPS MIPS64 MIPS64N32 MIPSEL MIPSEL64 MIPSEL64N32 PPC PPC64
     PPC64LE S390 S390X PARISC PARISC64 RISCV64 LOONGARCH64 M68K SH SHEB`).map(
    (a) => `SCMP_ARCH_${a}`,
  ),
);
const NAME_RE = /^[a-z_][a-z0-9_]*$/;

function checkCond(c: Checker, v: unknown, where: string): void {
  const o = c.obj(v, where, ["arches", "caps", "minKernel"]);
  if (o.arches !== undefined) c.strings(o.arches, `${where}.arches`, /^[a-z0-9]+$/);
  if (o.caps !== undefined) c.strings(o.caps, `${where}.caps`, /^CAP_[A-Z_]+$/);
  if (o.minKernel !== undefined && !/^\d+\.\d+$/.test(String(o.minKernel))) {
    c.fail(`${where}.minKernel`, 'not "major.minor"');
  }
}

/**
 * Checks the JSON text of a profile (an OCI `linux.seccomp` object, or one in
 * Docker's format) and returns it; throws an Error naming `source` and the bad
 * field otherwise. Not accepted: `listenerPath` and SCMP_ACT_NOTIFY (no agent
 * listens), argument values past 2^53 (JSON numbers).
 */
export function parseProfile(text: string, source: string): Profile {
  const c = new Checker(source);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    c.fail("not JSON", (err as Error).message);
  }
  const o = c.obj(v, "the profile", TOP_KEYS);
  c.oneOf(o.defaultAction, "defaultAction", ACTIONS);
  if (o.defaultErrnoRet !== undefined) c.uint(o.defaultErrnoRet, "defaultErrnoRet", 4095);
  if (o.architectures !== undefined) c.strings(o.architectures, "architectures", ARCH_RE, ARCHES);
  if (o.flags !== undefined) c.strings(o.flags, "flags", /^[A-Z_]+$/, FLAGS);
  if (o.archMap !== undefined) {
    if (o.architectures !== undefined)
      c.fail("archMap", "architectures and archMap exclude each other");
    c.list(o.archMap, "archMap").forEach((a, i) => {
      const e = c.obj(a, `archMap[${i}]`, ["architecture", "subArchitectures"]);
      c.strings([e.architecture], `archMap[${i}].architecture`, ARCH_RE, ARCHES);
      if (e.subArchitectures != null) {
        c.strings(e.subArchitectures, `archMap[${i}].subArchitectures`, ARCH_RE, ARCHES);
      }
    });
  }
  if (o.syscalls !== undefined) {
    o.syscalls = c.list(o.syscalls, "syscalls").map((s, i) => {
      const at = `syscalls[${i}]`;
      const r = c.obj(s, at, RULE_KEYS);
      if (r.name !== undefined) {
        if (r.names !== undefined) c.fail(at, "name and names exclude each other");
        r.names = [r.name];
        delete r.name;
      }
      const names = c.strings(r.names, `${at}.names`, NAME_RE);
      if (names.length === 0) c.fail(`${at}.names`, "empty");
      c.oneOf(r.action, `${at}.action`, ACTIONS);
      if (r.errnoRet !== undefined) c.uint(r.errnoRet, `${at}.errnoRet`, 4095);
      if (r.args !== undefined) {
        c.list(r.args, `${at}.args`, 6).forEach((a, j) => {
          const ap = `${at}.args[${j}]`;
          const arg = c.obj(a, ap, ["index", "value", "valueTwo", "op"]);
          c.uint(arg.index, `${ap}.index`, 5);
          c.uint(arg.value, `${ap}.value`);
          if (arg.valueTwo !== undefined) c.uint(arg.valueTwo, `${ap}.valueTwo`);
          c.oneOf(arg.op, `${ap}.op`, OPS);
        });
      }
      if (r.includes !== undefined) checkCond(c, r.includes, `${at}.includes`);
      if (r.excludes !== undefined) checkCond(c, r.excludes, `${at}.excludes`);
      delete r.comment;
      return r;
    });
  }
  return o as unknown as Profile;
}

/** `serve --seccomp`: "default", "unconfined", or the path of a profile file. */
export type SeccompOption = string;

/**
 * The task filter `option` asks for, rendered for tasks holding `caps`
 * (undefined: unconfined). Throws a one-line Error for a file that cannot be
 * read or is not a valid profile.
 */
export function loadSeccomp(
  option: SeccompOption,
  caps: readonly string[],
): OciSeccomp | undefined {
  if (option === "unconfined") return undefined;
  if (option === "default") return defaultSeccomp(hostTarget(caps));
  let text: string;
  try {
    text = readFileSync(option, "utf8");
  } catch (err) {
    throw new Error(`seccomp profile ${option}: ${(err as Error).message}`);
  }
  return renderProfile(parseProfile(text, option), hostTarget(caps));
}
