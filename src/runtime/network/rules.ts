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

/** The union of `all` (the host side of a task with sidecar policies: see hostRules). */
function unionOf(all: Sets[]): Sets {
  const u = (k: keyof Sets) => [...new Set(all.flatMap((x) => x[k]))];
  return { allow4: u("allow4"), allow6: u("allow6"), dns4: u("dns4"), dns6: u("dns6") };
}

function set(name: string, type: string, elements: string[]): string {
  const els = elements.length > 0 ? ` elements = { ${elements.join(", ")} };` : "";
  return `  set ${name} { type ${type}; flags interval; auto-merge;${els} }`;
}

/** The sets of `s`, their names prefixed with `p` ("" for the task's own). */
function declareSets(s: Sets, p = ""): string[] {
  return [
    set(`${p}allow4`, "ipv4_addr", s.allow4),
    set(`${p}allow6`, "ipv6_addr", s.allow6),
    set(`${p}dns4`, "ipv4_addr", s.dns4),
    set(`${p}dns6`, "ipv6_addr", s.dns6),
  ];
}

/** `nft -f` script text that replaces table `family name` with `body` (none: removes it). */
function replaceTable(family: string, name: string, body: string[] | undefined): string {
  const lines = [`table ${family} ${name} {}`, `delete table ${family} ${name}`];
  if (body) lines.push(`table ${family} ${name} {`, ...body, "}");
  return `${lines.join("\n")}\n`;
}

/** Outbound under the sets prefixed `p`: allowed destinations and DNS pass, the rest is refused. */
const outbound = (p: string) => [
  `ip daddr @${p}allow4 accept`,
  `ip6 daddr @${p}allow6 accept`,
  `meta l4proto { tcp, udp } th dport 53 ip daddr @${p}dns4 accept`,
  `meta l4proto { tcp, udp } th dport 53 ip6 daddr @${p}dns6 accept`,
  "meta l4proto tcp reject with tcp reset",
  "reject with icmpx admin-prohibited",
];

/** Inbound under the sets prefixed `p`: only from allowed addresses and the nameservers' port 53. */
const inbound = (p: string) => [
  `ip saddr @${p}allow4 accept`,
  `ip6 saddr @${p}allow6 accept`,
  `meta l4proto { tcp, udp } th sport 53 ip saddr @${p}dns4 accept`,
  `meta l4proto { tcp, udp } th sport 53 ip6 saddr @${p}dns6 accept`,
  "drop",
];

const indent = (lines: string[]) => lines.map((l) => `    ${l}`);

/** One sidecar's own policy, as the task namespace's table enforces it (see taskRules). */
export interface SidecarRule {
  /** The conntrack mark of its connections: > 0, unique among the task's sidecars. */
  mark: number;
  /** Its cgroup, as `socket cgroupv2` names it (socket-cgroup.ts). */
  cgroup: { path: string; level: number };
  policy: NetworkPolicy;
}

/** The sets and chains of sidecar `s` (`s<mark>_*`). */
function sidecarBody(s: SidecarRule): string[] {
  const p = `s${s.mark}_`;
  return [
    ...declareSets(setsOf(s.policy), p),
    `  chain ${p}out {`,
    ...indent(outbound(p)),
    "  }",
    `  chain ${p}in {`,
    ...indent(inbound(p)),
    "  }",
  ];
}

/**
 * The rules of a hook that hand the sidecars' connections to their chains:
 * a connection not marked yet whose packet belongs to a socket made in a
 * sidecar's cgroup gets that sidecar's mark, and a marked connection goes to
 * its sidecar's chain, which accepts or refuses every packet of it.
 */
function dispatch(sidecars: SidecarRule[], dir: "out" | "in"): string[] {
  return sidecars.flatMap((s) => [
    `ct mark 0 socket cgroupv2 level ${s.cgroup.level} "${s.cgroup.path}" ct mark set ${s.mark}`,
    `ct mark ${s.mark} jump s${s.mark}_${dir}`,
  ]);
}

/**
 * The task namespace's table for the task's `policy` (undefined: open) and
 * its sidecars' own policies (none and open: no table).
 * Outbound: loopback, the allowed destinations and (for a policy with
 * domains) DNS to the nameservers pass; any other TCP packet is answered
 * with a reset and anything else with ICMP admin-prohibited, so a
 * connection is refused at once and an established one fails on its next
 * send. Inbound: only from loopback, allowed addresses and the nameservers'
 * port 53, so an established connection to an address no longer allowed
 * stops in both directions. Every packet is matched, not only new
 * connections: that is what cuts the established ones.
 *
 * A sidecar with a policy of its own: every connection whose first packet
 * comes from (outbound) or goes to (inbound, a listener's) a socket of the
 * sidecar's cgroup is marked with its conntrack mark, and every packet of a
 * marked connection is judged by the sidecar's chain (the same rules over
 * its own sets) instead of the task's. The mark is what keeps the reply
 * packets that no full socket of the sidecar sends (a SYN-ACK, a TIME_WAIT
 * ACK) with the connection's container.
 */
export function taskRules(policy: NetworkPolicy | undefined, sidecars: SidecarRule[] = []): string {
  if (!policy && sidecars.length === 0) return replaceTable("inet", TASK_TABLE, undefined);
  return replaceTable("inet", TASK_TABLE, [
    ...(policy ? declareSets(setsOf(policy)) : []),
    ...sidecars.flatMap(sidecarBody),
    "  chain output {",
    "    type filter hook output priority filter; policy accept;",
    '    oifname "lo" accept',
    ...indent(dispatch(sidecars, "out")),
    ...(policy ? indent(outbound("")) : []),
    "  }",
    "  chain input {",
    "    type filter hook input priority filter; policy accept;",
    '    iifname "lo" accept',
    ...indent(dispatch(sidecars, "in")),
    ...(policy ? indent(inbound("")) : []),
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
 *
 * This side cannot tell the task's containers apart (one source address for
 * the whole namespace, and no socket to ask): under a task policy it allows
 * the union of the task's and `sidecars`' allowlists (the namespace's table
 * splits them per container); an open task stays open.
 */
export function hostRules(
  h: HostSide,
  policy: NetworkPolicy | undefined,
  sidecars: NetworkPolicy[] = [],
): string {
  const filter = policy
    ? [
        "    ip daddr @allow4 return",
        "    meta l4proto { tcp, udp } th dport 53 ip daddr @dns4 return",
        "    drop",
      ]
    : [];
  return replaceTable("inet", h.table, [
    ...declareSets(
      policy
        ? unionOf([policy, ...sidecars].map(setsOf))
        : { allow4: [], allow6: [], dns4: [], dns6: [] },
    ),
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
