import type { NetworkPolicy } from "../runtime.ts";
import { type Cidr, formatCidr, hostCidr, parseCidr } from "./cidr.ts";

/**
 * The nftables rulesets of an `open` task (docs/DECISIONS.md, "Network
 * policy"), as `nft -f` scripts. Each script replaces its table in one
 * transaction (`table X {}` makes it exist, `delete table X` empties the
 * name, then the new table): the kernel switches atomically, no packet sees
 * a half-made table.
 */

/** The table inside the task's network namespace. */
export const TASK_TABLE = "taskrouter";

/** A policy as address sets: what it allows and which nameservers it lets the task query. */
interface Sets {
  allow4: string[];
  allow6: string[];
  dns4: string[];
  dns6: string[];
}

function split(cidrs: Cidr[]): [string[], string[]] {
  return [
    cidrs.filter((c) => c.family === 4).map(formatCidr),
    cidrs.filter((c) => c.family === 6).map(formatCidr),
  ];
}

function setsOf(p: NetworkPolicy): Sets {
  const allowed = [
    ...p.cidrs.map((c) => parseCidr(c)),
    ...p.domains.flatMap((d) => d.addresses.map((a) => hostCidr(a))),
  ].filter((c): c is Cidr => c !== undefined);
  const dns = p.nameservers.map((a) => hostCidr(a)).filter((c): c is Cidr => c !== undefined);
  const [allow4, allow6] = split(allowed);
  const [dns4, dns6] = split(dns);
  return { allow4, allow6, dns4, dns6 };
}

function set(name: string, type: string, elements: string[]): string {
  const els = elements.length > 0 ? ` elements = { ${elements.join(", ")} };` : "";
  return `  set ${name} { type ${type}; flags interval; auto-merge;${els} }`;
}

function declareSets(s: Sets): string[] {
  return [
    set("allow4", "ipv4_addr", s.allow4),
    set("allow6", "ipv6_addr", s.allow6),
    set("dns4", "ipv4_addr", s.dns4),
    set("dns6", "ipv6_addr", s.dns6),
  ];
}

/** `nft -f` script text that replaces table `family name` with `body` (none: removes it). */
function replaceTable(family: string, name: string, body: string[] | undefined): string {
  const lines = [`table ${family} ${name} {}`, `delete table ${family} ${name}`];
  if (body) lines.push(`table ${family} ${name} {`, ...body, "}");
  return `${lines.join("\n")}\n`;
}

/**
 * The task namespace's table for `policy` (undefined: open, no table).
 * Outbound: loopback, the allowed destinations and (for a policy with
 * domains) DNS to the nameservers pass; any other TCP packet is answered
 * with a reset and anything else with ICMP admin-prohibited, so a
 * connection is refused at once and an established one fails on its next
 * send. Inbound: only from loopback, allowed addresses and the nameservers'
 * port 53, so an established connection to an address no longer allowed
 * stops in both directions. Every packet is matched, not only new
 * connections: that is what cuts the established ones.
 */
export function taskRules(policy: NetworkPolicy | undefined): string {
  if (!policy) return replaceTable("inet", TASK_TABLE, undefined);
  return replaceTable("inet", TASK_TABLE, [
    ...declareSets(setsOf(policy)),
    "  chain output {",
    "    type filter hook output priority filter; policy accept;",
    '    oifname "lo" accept',
    "    ip daddr @allow4 accept",
    "    ip6 daddr @allow6 accept",
    "    meta l4proto { tcp, udp } th dport 53 ip daddr @dns4 accept",
    "    meta l4proto { tcp, udp } th dport 53 ip6 daddr @dns6 accept",
    "    meta l4proto tcp reject with tcp reset",
    "    reject with icmpx admin-prohibited",
    "  }",
    "  chain input {",
    "    type filter hook input priority filter; policy accept;",
    '    iifname "lo" accept',
    "    ip saddr @allow4 accept",
    "    ip6 saddr @allow6 accept",
    "    meta l4proto { tcp, udp } th sport 53 ip saddr @dns4 accept",
    "    meta l4proto { tcp, udp } th sport 53 ip6 saddr @dns6 accept",
    "    drop",
    "  }",
  ]);
}

/** What the host's table of a task needs to know. */
export interface HostSide {
  /** The host table's name. */
  table: string;
  /** The host end of the task's veth. */
  veth: string;
  /** The task's address. */
  address: string;
}

/**
 * The host's table for one task: NAT (masquerade) of the task's address
 * out of any other interface, and a filter on what comes in from the
 * task's veth (forwarded or to this machine): only the task's own source
 * address, no IPv6, and under a policy only the allowed destinations. The
 * task cannot touch this table; it repeats the policy where a raw packet
 * socket (CAP_NET_RAW), which skips the namespace's IP hooks, would
 * otherwise get through.
 */
export function hostRules(h: HostSide, policy: NetworkPolicy | undefined): string {
  const filter = policy
    ? [
        "    ip daddr @allow4 return",
        "    meta l4proto { tcp, udp } th dport 53 ip daddr @dns4 return",
        "    drop",
      ]
    : [];
  return replaceTable("inet", h.table, [
    ...declareSets(policy ? setsOf(policy) : { allow4: [], allow6: [], dns4: [], dns6: [] }),
    "  chain from_task {",
    `    ip saddr != ${h.address} drop`,
    "    meta nfproto ipv6 drop",
    ...filter,
    "  }",
    "  chain forward {",
    "    type filter hook forward priority filter; policy accept;",
    `    iifname "${h.veth}" jump from_task`,
    "  }",
    "  chain input {",
    "    type filter hook input priority filter; policy accept;",
    `    iifname "${h.veth}" jump from_task`,
    "  }",
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    `    ip saddr ${h.address} oifname != "${h.veth}" masquerade`,
    "  }",
  ]);
}

/** The script that removes host table `table` (fine when it does not exist). */
export function dropTable(table: string): string {
  return replaceTable("inet", table, undefined);
}
