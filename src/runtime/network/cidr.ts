import { isIPv4, isIPv6 } from "node:net";

/** A parsed CIDR block: its family, network address (host bits cleared) and prefix length. */
export interface Cidr {
  readonly family: 4 | 6;
  /** The network address as an integer (32 or 128 bits). */
  readonly net: bigint;
  readonly prefix: number;
}

const bits = (family: 4 | 6) => (family === 4 ? 32 : 128);

/** The integer of an IPv4 or IPv6 address (`isIPv4`/`isIPv6` already true). */
function addressValue(addr: string, family: 4 | 6): bigint {
  if (family === 4) {
    return addr.split(".").reduce((n, p) => (n << 8n) | BigInt(Number(p)), 0n);
  }
  let text = addr;
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text)?.[1];
  if (v4) {
    const n = addressValue(v4, 4);
    text = `${text.slice(0, -v4.length)}${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const h = head === "" ? [] : head.split(":");
  const t = tail === undefined || tail === "" ? [] : tail.split(":");
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill("0"), ...t];
  return groups.reduce((n, g) => (n << 16n) | BigInt(Number.parseInt(g, 16)), 0n);
}

/**
 * Parses `ADDRESS/PREFIX` (IPv4 or IPv6; no zone). Host bits are cleared
 * (10.1.2.3/8 is 10.0.0.0/8). Undefined for anything else, a bare address too.
 */
export function parseCidr(text: string): Cidr | undefined {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text);
  if (!m?.[1] || !m[2]) return undefined;
  const family = isIPv4(m[1]) ? 4 : isIPv6(m[1]) && !m[1].includes("%") ? 6 : undefined;
  if (family === undefined) return undefined;
  const prefix = Number(m[2]);
  if (prefix > bits(family) || (m[2].length > 1 && m[2].startsWith("0"))) return undefined;
  const host = (1n << BigInt(bits(family) - prefix)) - 1n;
  return { family, net: addressValue(m[1], family) & ~host, prefix };
}

/** The text of address `n` of `family` (IPv6 in full, lower-case groups, no compression). */
export function formatAddress(n: bigint, family: 4 | 6): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 0xffn)).join(".");
  const groups: string[] = [];
  for (let s = 112n; s >= 0n; s -= 16n) groups.push(((n >> s) & 0xffffn).toString(16));
  return groups.join(":");
}

/** `c` as text: network address and prefix. */
export function formatCidr(c: Cidr): string {
  return `${formatAddress(c.net, c.family)}/${c.prefix}`;
}

/** The single-address block of address `addr` (an IP literal), or undefined. */
export function hostCidr(addr: string): Cidr | undefined {
  const family = isIPv4(addr) ? 4 : isIPv6(addr) ? 6 : undefined;
  return family === undefined ? undefined : parseCidr(`${addr}/${bits(family)}`);
}

/** Block `index` of size /`prefix` inside `outer` (undefined past its end). */
export function subBlock(outer: Cidr, prefix: number, index: number): Cidr | undefined {
  const count = 1n << BigInt(prefix - outer.prefix);
  if (prefix < outer.prefix || BigInt(index) >= count || index < 0) return undefined;
  return {
    family: outer.family,
    net: outer.net + (BigInt(index) << BigInt(bits(outer.family) - prefix)),
    prefix,
  };
}
