/**
 * Helpers of the network policy tests: a TCP echo service on this machine,
 * TCP clients that run inside a task (the host's node, which the default
 * runc root has), and the wire calls of TaskSetNetworkAccess.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { readFile, realpath, writeFile } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { promisify } from "node:util";
import type { WireClient } from "./wire-client.ts";

const run = promisify(execFile);

/** A TCP service on all of this machine's addresses: echoes lines, counts them per connection. */
export class EchoService {
  readonly sockets = new Set<Socket>();
  private readonly lineWaiters: (() => void)[] = [];
  private constructor(private readonly server: Server) {}

  static async start(): Promise<EchoService> {
    const server = createServer();
    const svc = new EchoService(server);
    server.on("connection", (s) => {
      svc.sockets.add(s);
      s.on("error", () => undefined);
      s.on("close", () => svc.sockets.delete(s));
      s.on("data", (d) => {
        s.write(d);
        for (const w of svc.lineWaiters.splice(0)) w();
      });
    });
    await new Promise<void>((res) => server.listen(0, "0.0.0.0", res));
    return svc;
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  /** Resolves when the next bytes arrive from any client. */
  nextData(): Promise<void> {
    return new Promise((res) => this.lineWaiters.push(res));
  }

  /** Writes `text` to every open connection. */
  broadcast(text: string): void {
    for (const s of this.sockets) s.write(text);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((res) => this.server.close(res));
  }
}

/**
 * argv of a one-shot connect from inside a task: prints "connected" (exit
 * 0) or the error code (exit 4).
 */
export const connectOnce = (host: string, port: number) => [
  process.execPath,
  "-e",
  `const s = require("net").connect(${port}, ${JSON.stringify(host)}, () => { console.log("connected"); s.end(); });
   s.on("error", (e) => { console.log(e.code); process.exit(4); });`,
];

/**
 * argv of a long connection from inside a task: writes "tick" every 50 ms,
 * prints every byte it reads, and on a socket error prints "error CODE"
 * and exits 3 (exit 0 if the peer ends the connection).
 */
export const ticker = (host: string, port: number) => [
  process.execPath,
  "-e",
  `const s = require("net").connect(${port}, ${JSON.stringify(host)});
   s.on("data", (d) => process.stdout.write(d));
   s.on("error", (e) => { console.log("error " + e.code); process.exit(3); });
   s.on("end", () => process.exit(0));
   setInterval(() => s.write("tick\\n"), 50);`,
];

/** TaskSetNetworkAccess with an allowlist, through the independent stack. */
export function allowlist(w: WireClient, task_id: string, cidrs: string[], domains: string[] = []) {
  return w.unary("TaskSetNetworkAccess", {
    task_id,
    network_access: { network_access_type: 3, allowed_cidrs: cidrs, allowed_domains: domains },
  });
}

/** The names of this machine's nftables tables (`family name`). */
export async function hostTables(): Promise<string[]> {
  const { stdout } = await run("nft", ["list", "tables"]);
  return stdout
    .split("\n")
    .map((l) => l.replace(/^table /, "").trim())
    .filter((l) => l !== "");
}

/** The names of this machine's links. */
export async function hostLinks(): Promise<string[]> {
  const { stdout } = await run("ip", ["-j", "link", "show"]);
  return (JSON.parse(stdout) as { ifname: string }[]).map((l) => l.ifname);
}

/** The host end of the veth of a task whose gateway is `gateway` (see TaskNetworks). */
export function vethOf(gateway: string): string {
  const n = gateway.split(".").reduce((a, p) => a * 256 + Number(p), 0) - 1;
  return `trn${n.toString(16).padStart(8, "0")}`;
}

/** Why the network tests cannot run here (no nft / ip / nsenter), or undefined. */
export async function netToolsMissing(): Promise<string | undefined> {
  for (const [tool, arg] of [
    ["nft", "--version"],
    ["ip", "-V"],
    ["nsenter", "--version"],
  ] as const) {
    try {
      await run(tool, [arg]);
    } catch {
      const why = `${tool} is not installed`;
      process.stdout.write(`# network tests skipped: ${why}\n`);
      return why;
    }
  }
  return undefined;
}

/**
 * Removes the host tables and veths that the router of `dataDir` left
 * (tasks a failed test did not remove): those named or marked with its tag.
 */
export async function removeNetworkLeftovers(dataDir: string): Promise<void> {
  const real = await realpath(dataDir).catch(() => undefined);
  if (!real) return;
  const tag = createHash("sha256").update(real).digest("hex").slice(0, 10);
  const tables = await hostTables().catch(() => [] as string[]);
  for (const t of tables) {
    if (t.startsWith(`inet tr_${tag}_`)) await run("nft", ["delete", "table", ...t.split(" ")]);
  }
  const { stdout } = await run("ip", ["-j", "-d", "link", "show", "type", "veth"]).catch(() => ({
    stdout: "[]",
  }));
  for (const l of JSON.parse(stdout || "[]") as { ifname: string; ifalias?: string }[]) {
    if (l.ifalias?.startsWith(`taskrouter ${tag} `)) {
      await run("ip", ["link", "del", l.ifname]).catch(() => undefined);
    }
  }
}

const IP_FORWARD = "/proc/sys/net/ipv4/ip_forward";

/**
 * Reads this machine's IPv4 forwarding setting and returns what puts it back:
 * a router with `--network open` tasks turns forwarding on and leaves it on
 * (DECISIONS "Network policy"), and a test must leave the machine as it was.
 */
export async function keepIpForward(): Promise<() => Promise<void>> {
  const before = await readFile(IP_FORWARD, "utf8").catch(() => undefined);
  return async () => {
    if (before !== undefined) await writeFile(IP_FORWARD, before).catch(() => undefined);
  };
}
