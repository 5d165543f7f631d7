import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, rm, rmdir, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { userInfo } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { cleanup, killAll } from "./cleanup.ts";
import { run } from "./spawn.ts";

const SSHD = "/usr/sbin/sshd";

/** An OpenSSH server on a loopback port and a multiplexed client connection to it. */
export interface Ssh {
  /** argv that runs `cmd` (a shell command line) over the open master connection. */
  argv(cmd: string): string[];
  /** `ssh -V`, for the report. */
  version: string;
  /** The sshd we started (its descendants serve the master connection and its sessions). */
  sshdPid: number;
}

export type Availability<T> = { ok: true; value: T } | { ok: false; reason: string };

/**
 * Installs openssh-server when sshd is missing and we are root with apt-get
 * (never starting the distribution's own service), unless `install` is false.
 */
async function ensureSshd(install: boolean): Promise<string | undefined> {
  if (existsSync(SSHD) && existsSync("/usr/bin/ssh")) return undefined;
  if (!install) return `${SSHD} missing (apt-get install openssh-server)`;
  if (process.getuid?.() !== 0 || !existsSync("/usr/bin/apt-get")) {
    return `${SSHD} missing and not root with apt-get: install openssh-server`;
  }
  process.stderr.write("bench: installing openssh-server (apt-get)…\n");
  // policy-rc.d exit 101 keeps the package from starting a system sshd.
  const policy = "/usr/sbin/policy-rc.d";
  const madePolicy = !existsSync(policy);
  if (madePolicy) await writeFile(policy, "#!/bin/sh\nexit 101\n", { mode: 0o755 });
  try {
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    const opts = { stdio: "ignore" as const, env, timeout: 300_000 };
    spawnSync("apt-get", ["update", "-qq"], opts);
    const r = spawnSync("apt-get", ["install", "-y", "-qq", "openssh-server"], opts);
    if (r.status !== 0) return `apt-get install openssh-server failed (${r.status})`;
  } finally {
    if (madePolicy) await rm(policy, { force: true });
  }
  return existsSync(SSHD) ? undefined : `${SSHD} still missing after install`;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => (a && typeof a !== "string" ? resolve(a.port) : reject(new Error("no port"))));
    });
  });
}

/**
 * Starts `sshd -D` as our child on a free loopback port with generated host
 * and client keys (nothing of the machine's own ssh setup is used), then a
 * ControlMaster connection that every later `ssh` call reuses.
 */
export async function startSsh(dir: string, install: boolean): Promise<Availability<Ssh>> {
  const missing = await ensureSshd(install);
  if (missing) return { ok: false, reason: missing };
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const user = userInfo().username;
  const hostKey = join(dir, "host_ed25519");
  const clientKey = join(dir, "client_ed25519");
  for (const k of [hostKey, clientKey]) {
    await run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", k]);
  }
  await writeFile(join(dir, "authorized_keys"), await readFile(`${clientKey}.pub`), {
    mode: 0o600,
  });
  // sshd needs its privilege separation directory; made (and removed) by us if missing.
  if (!existsSync("/run/sshd")) {
    await mkdir("/run/sshd", { mode: 0o755 });
    cleanup.add("/run/sshd", () => rmdir("/run/sshd").catch(() => {}));
  }
  const port = await freePort();
  const config = join(dir, "sshd_config");
  await writeFile(
    config,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
      `AllowUsers ${user}`,
      "PermitRootLogin prohibit-password",
      "PubkeyAuthentication yes",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "UsePAM no",
      "StrictModes no",
      "UseDNS no",
      "PrintMotd no",
      "PrintLastLog no",
      "PidFile none",
      "MaxSessions 100",
      // bash skips ~/.bashrc when SHLVL says it is nested: the baseline times
      // ssh, not this machine's shell start-up files (pyenv init: ~2 s here).
      "SetEnv SHLVL=1",
      "LogLevel ERROR",
      "",
    ].join("\n"),
  );
  const sshd = cleanup.child(
    spawn(SSHD, ["-D", "-e", "-f", config], { stdio: ["ignore", "ignore", "pipe"] }),
  );
  let sshdErr = "";
  sshd.stderr.on("data", (c: Buffer) => {
    sshdErr = (sshdErr + c.toString()).slice(-2000);
  });
  cleanup.add(`sshd pid ${sshd.pid}`, () => killAll(sshd.pid ? [sshd.pid] : []));
  const hostPub = (await readFile(`${hostKey}.pub`, "utf8")).trim().split(" ");
  await writeFile(join(dir, "known_hosts"), `[127.0.0.1]:${port} ${hostPub[0]} ${hostPub[1]}\n`);
  const control = join(dir, "cm");
  const base = [
    "-F",
    "/dev/null",
    "-p",
    String(port),
    "-i",
    clientKey,
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "BatchMode=yes",
    "-o",
    `UserKnownHostsFile=${join(dir, "known_hosts")}`,
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    `ControlPath=${control}`,
    "-o",
    "LogLevel=ERROR",
  ];
  const target = `${user}@127.0.0.1`;
  // The master: a child we keep (ControlPersist off, no -f fork), killed by pid at the end.
  let master: ReturnType<typeof spawn> | undefined;
  let lastErr = "";
  for (let i = 0; i < 50 && !master; i++) {
    if (sshd.exitCode !== null) return { ok: false, reason: `sshd exited: ${sshdErr.trim()}` };
    try {
      await run(["ssh", ...base, "-o", "ControlMaster=no", "-S", "none", target, "true"]);
    } catch (err) {
      lastErr = String(err);
      await sleep(100);
      continue;
    }
    master = cleanup.child(
      spawn("ssh", [...base, "-M", "-N", "-o", "ControlPersist=no", target], { stdio: "ignore" }),
    );
    const m = master;
    cleanup.add(`ssh master pid ${m.pid}`, () => killAll(m.pid ? [m.pid] : []));
  }
  if (!master) return { ok: false, reason: `cannot log in over ssh: ${lastErr}` };
  for (let i = 0; i < 100; i++) {
    const r = spawnSync("ssh", [...base, "-O", "check", target], { stdio: "ignore" });
    if (r.status === 0) {
      const version = spawnSync("ssh", ["-V"], { encoding: "utf8" }).stderr.trim();
      const argv = (cmd: string) => ["ssh", ...base, "-o", "ControlMaster=no", target, cmd];
      return { ok: true, value: { argv, version, sshdPid: sshd.pid as number } };
    }
    await sleep(100);
  }
  return { ok: false, reason: "the ssh ControlMaster connection did not come up" };
}
