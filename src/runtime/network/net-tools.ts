import { spawn } from "node:child_process";
import { readFile, stat, writeFile } from "node:fs/promises";
import { FailedPreconditionError } from "../../errors.ts";

/**
 * The commands the network of `open` tasks is made with: iproute2's `ip`,
 * `nft` (nftables) and util-linux's `nsenter`, run as this (root) process.
 */

/** A failed command: its stderr (first lines) in the message. */
export class CommandError extends Error {
  constructor(
    readonly argv: string[],
    readonly stderr: string,
    readonly code: number | null,
  ) {
    super(`${argv.join(" ")} failed (${code ?? "signal"}): ${stderr.trim().split("\n")[0] ?? ""}`);
  }
}

/** Runs `argv` with `input` on stdin; resolves with its stdout, rejects with CommandError. */
export function runCommand(argv: string[], input = ""): Promise<string> {
  const [file = "", ...args] = argv;
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.stdin.on("error", () => undefined);
    child.once("error", (e: NodeJS.ErrnoException) => {
      const missing = e.code === "ENOENT";
      reject(
        missing
          ? new FailedPreconditionError(
              `${file} is not installed here (--network open needs ip, nft and nsenter)`,
            )
          : e,
      );
    });
    child.once("close", (code) => {
      if (code === 0) resolve(Buffer.concat(out).toString());
      else reject(new CommandError(argv, Buffer.concat(err).toString(), code));
    });
    child.stdin.end(input);
  });
}

/** `argv` run in the network namespace of process `pid`. */
export function inNetns(pid: number, argv: string[]): string[] {
  return ["nsenter", `--net=/proc/${pid}/ns/net`, "--", ...argv];
}

/**
 * Throws unless process `pid` is in a network namespace other than this
 * process's: nothing meant for a task's namespace may reach this machine's.
 */
export async function assertOwnNetns(pid: number): Promise<void> {
  const [task, self] = await Promise.all([
    stat(`/proc/${pid}/ns/net`).catch(() => undefined),
    stat("/proc/self/ns/net"),
  ]);
  if (!task) throw new FailedPreconditionError(`the task's init (pid ${pid}) is gone`);
  if (task.ino === self.ino && task.dev === self.dev) {
    throw new Error(`process ${pid} shares this machine's network namespace`);
  }
}

/** Applies the `nft -f` script `script`, in process `pid`'s network namespace when given. */
export async function nft(script: string, pid?: number): Promise<void> {
  await runCommand(
    pid === undefined ? ["nft", "-f", "-"] : inNetns(pid, ["nft", "-f", "-"]),
    script,
  );
}

/** Runs `ip -batch -` with `lines`, in process `pid`'s network namespace when given. */
export async function ipBatch(lines: string[], pid?: number): Promise<void> {
  const argv = ["ip", "-batch", "-"];
  await runCommand(pid === undefined ? argv : inNetns(pid, argv), `${lines.join("\n")}\n`);
}

/** A host link as `ip -j -d link` lists it. */
export interface HostLink {
  name: string;
  alias: string | undefined;
}

/** The veth links of this machine's namespace (name and alias). */
export async function hostVeths(): Promise<HostLink[]> {
  const out = await runCommand(["ip", "-j", "-d", "link", "show", "type", "veth"]);
  const links = JSON.parse(out || "[]") as { ifname?: string; ifalias?: string }[];
  return links
    .filter((l) => typeof l.ifname === "string")
    .map((l) => ({ name: l.ifname as string, alias: l.ifalias }));
}

/** The names of this machine's `inet` nftables tables. */
export async function hostInetTables(): Promise<string[]> {
  const out = await runCommand(["nft", "-j", "list", "tables", "inet"]);
  const parsed = JSON.parse(out || "{}") as { nftables?: { table?: { name?: string } }[] };
  return (parsed.nftables ?? []).flatMap((e) => (e.table?.name ? [e.table.name] : []));
}

const IP_FORWARD = "/proc/sys/net/ipv4/ip_forward";

/** Turns IPv4 forwarding on (NAT for tasks needs it); never turns it off. */
export async function enableForwarding(): Promise<void> {
  if ((await readFile(IP_FORWARD, "utf8")).trim() !== "1") await writeFile(IP_FORWARD, "1\n");
}
