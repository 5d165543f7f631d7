import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { closeSync, existsSync, openSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { alive } from "./procs.ts";

/** Debian's CNCF distribution registry (package docker-registry). */
export const REGISTRY_BIN = "/usr/bin/docker-registry";

/** Why registry tests cannot run here (printed once per reason); undefined when they can. */
export function registrySkipReason(
  needs: { skopeo?: boolean; htpasswd?: boolean; openssl?: boolean } = {},
) {
  let why: string | undefined;
  if (!existsSync(REGISTRY_BIN))
    why = `${REGISTRY_BIN} is not installed (apt-get install docker-registry)`;
  else if (needs.skopeo && !onPath("skopeo")) why = "skopeo is not installed";
  else if (needs.htpasswd && !onPath("htpasswd")) {
    why = "htpasswd is not installed (apt-get install apache2-utils)";
  } else if (needs.openssl && !onPath("openssl")) why = "openssl is not installed";
  if (why) process.stdout.write(`# registry tests skipped: ${why}\n`);
  return why;
}

function onPath(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** A free TCP port on 127.0.0.1 (bound once, then released). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/** Token auth (the distribution spec's bearer flow): the token service and the certificate it signs with. */
export interface TokenAuth {
  realm: string;
  service: string;
  issuer: string;
  rootCertBundle: string;
}

export interface TestRegistry {
  /** 127.0.0.1:PORT */
  host: string;
  /** The running registry's pid. */
  pid(): number;
  /** SIGKILL (by pid) and wait until it is gone. */
  kill(): Promise<void>;
  /** Starts it again on the same port and storage (after `kill`). */
  restart(): Promise<void>;
  /** Requests of the access log: `GET /v2/REPO/blobs/DIGEST` lines, for `digest` or any. */
  blobGets(digest?: string): Promise<number>;
  /** Blob uploads completed (`PUT .../blobs/uploads/...?digest=` answered 201) in the access log. */
  blobPuts(): Promise<number>;
  /** Kills it and removes its directory. */
  close(): Promise<void>;
}

/**
 * Starts a registry this test owns (never the Debian service): a generated
 * config.yml, filesystem storage in a temp dir, 127.0.0.1 on a free port,
 * access log to a file; `htpasswd` turns on basic auth with that file,
 * `token` the bearer-token flow with that token service, `port` picks the
 * port.
 */
export async function startRegistry(
  opts: { htpasswd?: string; port?: number; token?: TokenAuth } = {},
): Promise<TestRegistry> {
  const dir = await mkdtemp(join(tmpdir(), "taskrouter-registry-"));
  const port = opts.port ?? (await freePort());
  const host = `127.0.0.1:${port}`;
  const t = opts.token;
  const auth = opts.htpasswd
    ? `auth:\n  htpasswd:\n    realm: taskrouter-test\n    path: ${opts.htpasswd}\n`
    : t
      ? `auth:\n  token:\n    realm: ${t.realm}\n    service: ${t.service}\n    issuer: ${t.issuer}\n    rootcertbundle: ${t.rootCertBundle}\n`
      : "";
  const config = join(dir, "config.yml");
  await writeFile(
    config,
    `version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: ${join(dir, "data")}
  delete:
    enabled: true
http:
  addr: ${host}
${auth}`,
  );
  const logFile = join(dir, "registry.log");
  let child: ChildProcess | undefined;
  const launch = async () => {
    const fd = openSync(logFile, "a");
    child = spawn(REGISTRY_BIN, ["serve", config], { stdio: ["ignore", fd, fd] });
    closeSync(fd);
    child.unref();
    for (let i = 0; ; i++) {
      const res = await fetch(`http://${host}/v2/`).catch(() => undefined);
      if (res) {
        await res.body?.cancel();
        if (res.status === 200 || res.status === 401) return;
      }
      if (child.exitCode !== null || i > 600) {
        const log = await readFile(logFile, "utf8").catch(() => "");
        throw new Error(`registry did not start (exit ${child.exitCode}):\n${log.slice(-2000)}`);
      }
      await sleep(50);
    }
  };
  const kill = async () => {
    const pid = child?.pid;
    if (pid === undefined || !(await alive(pid))) return;
    process.kill(pid, "SIGKILL");
    while (await alive(pid)) await sleep(20);
  };
  try {
    await launch();
  } catch (err) {
    await kill();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    host,
    pid: () => child?.pid ?? 0,
    kill,
    restart: launch,
    blobGets: async (digest) => {
      const log = await readFile(logFile, "utf8");
      const re = new RegExp(`"GET /v2/[^ ]+/blobs/${digest ?? "sha256:[0-9a-f]{64}"} HTTP`, "g");
      return (log.match(re) ?? []).length;
    },
    blobPuts: async () => {
      const log = await readFile(logFile, "utf8");
      return (
        log.match(/"PUT \/v2\/[^ ]+\/blobs\/uploads\/[^ ]*digest=[^ ]* HTTP\/[\d.]+" 201 /g) ?? []
      ).length;
    },
    close: async () => {
      await kill();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
