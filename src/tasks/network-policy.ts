import { lookup } from "node:dns/promises";
import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import { FailedPreconditionError, InvalidArgumentError, UnavailableError } from "../errors.ts";
import { checkMaxBytes, quote } from "../limits.ts";
import { formatCidr, hostCidr, parseCidr } from "../runtime/network/cidr.ts";
import type { NetworkPolicy, TaskNetworkInfo } from "../runtime/runtime.ts";
import type { Task } from "./task.ts";

/** The kinds of `modal.client.NetworkAccess` (PROTOCOL-LATER §3.6). */
export type NetworkAccessType = "unspecified" | "open" | "blocked" | "allowlist";

/** A TaskSetNetworkAccess request: the new policy, which replaces the old one whole (§5.8). */
export interface NetworkAccessRequest {
  type: NetworkAccessType;
  cidrs: readonly string[];
  domains: readonly string[];
}

/** Most entries one policy may have (INVALID_ARGUMENT past them). */
export const POLICY_LIMITS = { cidrs: 1024, domains: 64 } as const;
/** How long resolving one domain may take before the call fails with UNAVAILABLE. */
const RESOLVE_TIMEOUT_MS = 10_000;
const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Resolves a domain to IP addresses; rejects with the resolver's error (`code` ENOTFOUND...). */
export type DomainResolver = (name: string) => Promise<string[]>;

/** getaddrinfo, as the task's own libc would resolve (this machine's /etc/hosts and resolvers). */
const systemResolver: DomainResolver = async (name) =>
  (await lookup(name, { all: true, verbatim: true })).map((a) => a.address);

/** The policy's CIDRs, normalized and deduplicated; INVALID_ARGUMENT naming the first bad one. */
function checkCidrs(cidrs: readonly string[]): string[] {
  const out = new Set<string>();
  for (const text of cidrs) {
    checkMaxBytes("allowed_cidrs entry", text, 64);
    const c = parseCidr(text);
    if (!c) {
      throw new InvalidArgumentError(
        `allowed_cidrs: ${quote(text)} is not a CIDR (ADDRESS/PREFIX, IPv4 or IPv6)`,
      );
    }
    out.add(formatCidr(c));
  }
  return [...out];
}

/** The policy's domains, lower-cased without a final dot; INVALID_ARGUMENT for a bad name. */
function checkDomains(domains: readonly string[]): string[] {
  const out = new Set<string>();
  for (const text of domains) {
    checkMaxBytes("allowed_domains entry", text, 254);
    const name = text.toLowerCase().replace(/\.$/, "");
    if (name.startsWith("*")) {
      throw new InvalidArgumentError(
        `allowed_domains: ${quote(text)}: wildcard domains cannot be resolved to addresses`,
      );
    }
    if (name === "" || name.length > 253 || !name.split(".").every((l) => LABEL.test(l))) {
      throw new InvalidArgumentError(`allowed_domains: ${quote(text)} is not a domain name`);
    }
    out.add(name);
  }
  return [...out];
}

/** The addresses of `name`: INVALID_ARGUMENT when it has none, UNAVAILABLE when DNS failed. */
async function resolveDomain(name: string, resolve: DomainResolver): Promise<string[]> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new UnavailableError(`resolving ${quote(name)} timed out`)),
      RESOLVE_TIMEOUT_MS,
    );
  });
  try {
    const addrs = await Promise.race([resolve(name), timeout]);
    const unique = [...new Set(addrs.filter((a) => isIP(a) !== 0))];
    if (unique.length === 0) throw new InvalidArgumentError(`${quote(name)} has no addresses`);
    return unique;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOTFOUND" || code === "ENODATA") {
      throw new InvalidArgumentError(`allowed_domains: ${quote(name)} does not resolve (${code})`);
    }
    if (err instanceof InvalidArgumentError || err instanceof UnavailableError) throw err;
    throw new UnavailableError(`resolving ${quote(name)} failed: ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
}

/** This machine's nameservers (non-loopback IP literals of /etc/resolv.conf). */
async function systemNameservers(): Promise<string[]> {
  const text = await readFile("/etc/resolv.conf", "utf8").catch(() => "");
  const found = [...text.matchAll(/^\s*nameserver\s+(\S+)/gm)].map((m) => m[1] ?? "");
  return found.filter((a) => {
    const c = hostCidr(a);
    return c !== undefined && !(c.family === 4 ? a.startsWith("127.") : a === "::1");
  });
}

/** An allowlist's CIDRs (normalized) and domain names (not resolved yet), as checkPolicyLists gives them. */
export interface PolicyLists {
  cidrs: string[];
  names: string[];
}

/**
 * Checks an allowlist's entries (TaskSetNetworkAccess, a sidecar's
 * `network_access`): at most POLICY_LIMITS of each, every CIDR and domain
 * well-formed; INVALID_ARGUMENT naming the first bad one. Returns them normalized.
 */
export function checkPolicyLists(
  cidrs: readonly string[],
  domains: readonly string[],
): PolicyLists {
  if (cidrs.length > POLICY_LIMITS.cidrs || domains.length > POLICY_LIMITS.domains) {
    throw new InvalidArgumentError(
      `a policy has at most ${POLICY_LIMITS.cidrs} CIDRs and ${POLICY_LIMITS.domains} domains`,
    );
  }
  return { cidrs: checkCidrs(cidrs), names: checkDomains(domains) };
}

/**
 * The policy of checked `lists`: its domains resolved once, now
 * (INVALID_ARGUMENT when one does not resolve, UNAVAILABLE when DNS fails),
 * with this machine's nameservers when there are domains.
 */
export async function resolvePolicy(
  lists: PolicyLists,
  resolve: DomainResolver = systemResolver,
): Promise<NetworkPolicy> {
  const domains = await Promise.all(
    lists.names.map(async (name) => ({ name, addresses: await resolveDomain(name, resolve) })),
  );
  return {
    cidrs: lists.cidrs,
    domains,
    nameservers: domains.length > 0 ? await systemNameservers() : [],
    setAt: Date.now(),
  };
}

/**
 * Replaces the outbound policy of `task` (TaskSetNetworkAccess, §5.8), in
 * this order, so that bad input changes nothing: only ALLOWLIST is accepted
 * (INVALID_ARGUMENT otherwise), every CIDR and domain is checked
 * (INVALID_ARGUMENT), the task must be an "open" task of a runtime that can
 * police it (FAILED_PRECONDITION naming the runtime or the task's network),
 * the domains are resolved once, now (INVALID_ARGUMENT when one does not
 * resolve, UNAVAILABLE when DNS fails), and only then does the runtime
 * enforce the new policy. Returns it.
 */
export async function setNetworkAccess(
  task: Task,
  req: NetworkAccessRequest,
  resolve: DomainResolver = systemResolver,
): Promise<NetworkPolicy> {
  if (req.type !== "allowlist") {
    throw new InvalidArgumentError(
      `network_access_type must be ALLOWLIST, not ${req.type.toUpperCase()} (an open network is an allowlist of 0.0.0.0/0 and ::/0)`,
    );
  }
  const lists = checkPolicyLists(req.cidrs, req.domains);
  const rt = task.runtime;
  if (!rt.setNetworkPolicy) {
    throw new FailedPreconditionError(
      `the ${rt.name} runtime cannot enforce network policies: its tasks use this machine's network`,
    );
  }
  if (task.state !== "running") throw new FailedPreconditionError(`task ${task.id} is not running`);
  const mode = task.spec.network ?? "none";
  if (mode !== "open") {
    throw new FailedPreconditionError(
      `task ${task.id} has network ${quote(mode)}: only tasks created with network "open" (${rt.name} runtime) take a network policy`,
    );
  }
  const policy = await resolvePolicy(lists, resolve);
  await rt.setNetworkPolicy(task.id, policy);
  return policy;
}

/** What GetTask shows of a task's network policy. */
export interface NetworkView {
  /** Short form: "" (no network of its own), "open", "allow: A, B, +3 more", "allow: nothing". */
  short: string;
  info: TaskNetworkInfo | undefined;
}

/** The network of `task` as shown by GetTask / `task ls`. */
export function networkView(task: Task): NetworkView {
  const info = task.runtime.taskNetwork?.(task.id);
  if (!info) return { short: "", info };
  const p = info.policy;
  if (!p) return { short: "open", info };
  const all = [...p.cidrs, ...p.domains.map((d) => d.name)];
  if (all.length === 0) return { short: "allow: nothing", info };
  const shown = all.slice(0, 2).join(", ");
  return { short: `allow: ${shown}${all.length > 2 ? `, +${all.length - 2} more` : ""}`, info };
}

/**
 * TaskSetOutboundPolicy (§5.9): header replacement is set up when a task is
 * created, and this router creates no task with such a policy, so every
 * task refuses it (FAILED_PRECONDITION) once it is found.
 */
export function refuseOutboundPolicy(task: Task): never {
  throw new FailedPreconditionError(
    `task ${task.id} was not created with an outbound policy: header replacement is set up at creation, and this router creates no task with one`,
  );
}
