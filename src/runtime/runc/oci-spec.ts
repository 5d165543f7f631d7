import type { OciSeccomp } from "./seccomp.ts";

/**
 * A typed builder for the parts of the OCI runtime spec (config.json) that
 * taskrouter uses. Field names follow the OCI runtime-spec 1.0 exactly.
 */

export interface OciMount {
  destination: string;
  type?: string;
  source?: string;
  options?: string[];
}

export interface OciCapabilities {
  bounding: string[];
  effective: string[];
  permitted: string[];
}

export interface OciProcess {
  terminal: boolean;
  consoleSize?: { height: number; width: number };
  user: { uid: number; gid: number };
  args: string[];
  env: string[];
  cwd: string;
  capabilities: OciCapabilities;
  noNewPrivileges: boolean;
}

export interface OciResources {
  devices: { allow: boolean; access: string }[];
  memory?: { limit: number; swap: number };
  cpu?: { quota: number; period: number };
  pids?: { limit: number };
}

export interface OciSpec {
  ociVersion: string;
  process: OciProcess;
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: OciMount[];
  linux: {
    cgroupsPath: string;
    resources: OciResources;
    namespaces: { type: string; path?: string }[];
    rootfsPropagation: string;
    maskedPaths: string[];
    readonlyPaths: string[];
    seccomp?: OciSeccomp;
  };
}

/** Docker's default capability set: root in a task is a contained root. */
export const DEFAULT_CAPS = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FSETID",
  "CAP_FOWNER",
  "CAP_MKNOD",
  "CAP_NET_RAW",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETFCAP",
  "CAP_SETPCAP",
  "CAP_NET_BIND_SERVICE",
  "CAP_SYS_CHROOT",
  "CAP_KILL",
  "CAP_AUDIT_WRITE",
];

/** The capability sets of a process with `caps` (also ambient-free: root needs none). */
export function capabilities(caps: string[]): OciCapabilities {
  return { bounding: [...caps], effective: [...caps], permitted: [...caps] };
}

/** A process of the task: root, the default capabilities plus `extraCaps`. */
export function taskProcess(p: {
  args: string[];
  env: Record<string, string>;
  cwd: string;
  terminal?: { rows: number; cols: number } | undefined;
  extraCaps?: string[];
}): OciProcess {
  const proc: OciProcess = {
    terminal: p.terminal !== undefined,
    user: { uid: 0, gid: 0 },
    args: p.args,
    env: Object.entries(p.env).map(([k, v]) => `${k}=${v}`),
    cwd: p.cwd,
    capabilities: capabilities([...DEFAULT_CAPS, ...(p.extraCaps ?? [])]),
    noNewPrivileges: false,
  };
  if (p.terminal) proc.consoleSize = { height: p.terminal.rows, width: p.terminal.cols };
  return proc;
}

export interface TaskSpecInput {
  hostname: string;
  /** PID 1 of the container. */
  init: OciProcess;
  /** Bundle-relative or absolute path of the root filesystem. */
  rootfs: string;
  cgroupsPath: string;
  /** Own network namespace (loopback only) when true; the host's network otherwise. */
  isolatedNetwork: boolean;
  memoryBytes?: number | undefined;
  cpus?: number | undefined;
  pidsLimit?: number | undefined;
  /** Extra mounts after the standard /proc, /dev, /sys ones (e.g. the init binary). */
  extraMounts: OciMount[];
  /** The seccomp filter of every process of the task; undefined: none. */
  seccomp?: OciSeccomp | undefined;
}

const CPU_PERIOD_US = 100_000;

/** The config.json of a task container. */
export function buildTaskSpec(t: TaskSpecInput): OciSpec {
  const resources: OciResources = { devices: [{ allow: false, access: "rwm" }] };
  if (t.memoryBytes !== undefined) {
    resources.memory = { limit: t.memoryBytes, swap: t.memoryBytes };
  }
  if (t.cpus !== undefined) {
    resources.cpu = {
      quota: Math.max(1000, Math.round(t.cpus * CPU_PERIOD_US)),
      period: CPU_PERIOD_US,
    };
  }
  if (t.pidsLimit !== undefined) resources.pids = { limit: t.pidsLimit };
  const namespaces = ["pid", "ipc", "uts", "mount"];
  if (t.isolatedNetwork) namespaces.push("network");
  const spec: OciSpec = {
    ociVersion: "1.0.2",
    process: t.init,
    root: { path: t.rootfs, readonly: false },
    hostname: t.hostname,
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      {
        destination: "/dev",
        type: "tmpfs",
        source: "tmpfs",
        options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
      },
      {
        destination: "/dev/pts",
        type: "devpts",
        source: "devpts",
        options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
      },
      {
        destination: "/dev/shm",
        type: "tmpfs",
        source: "shm",
        options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
      },
      {
        destination: "/dev/mqueue",
        type: "mqueue",
        source: "mqueue",
        options: ["nosuid", "noexec", "nodev"],
      },
      {
        destination: "/sys",
        type: "sysfs",
        source: "sysfs",
        options: ["nosuid", "noexec", "nodev", "ro"],
      },
      ...t.extraMounts,
    ],
    linux: {
      cgroupsPath: t.cgroupsPath,
      resources,
      namespaces: namespaces.map((type) => ({ type })),
      // Mounts the router makes under the rootfs later propagate into the task.
      rootfsPropagation: "rslave",
      maskedPaths: [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
      ],
      readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
  };
  if (t.seccomp) spec.linux.seccomp = t.seccomp;
  return spec;
}
