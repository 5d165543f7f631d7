// A task's own network as a runtime reports and polices it (Runtime.setNetworkPolicy, taskNetwork).

/**
 * A task's outbound allowlist (TaskSetNetworkAccess), resolved: what a
 * runtime enforces. Everything it does not allow is blocked, loopback excepted.
 */
export interface NetworkPolicy {
  /** Allowed destinations: normalized CIDRs (IPv4 and IPv6). */
  cidrs: string[];
  /** Allowed domains and the addresses each resolved to when the policy was set. */
  domains: { name: string; addresses: string[] }[];
  /** Nameservers the task may query on port 53 (those of this machine when there are domains). */
  nameservers: string[];
  /** When it was set, ms since the epoch. */
  setAt: number;
}

/** An "open" task's own network: its address and policy. */
export interface TaskNetworkInfo {
  /** The task's IPv4 address (its veth end). */
  address: string;
  /** The gateway: this machine's end of the veth. */
  gateway: string;
  /** undefined: open (no policy set). */
  policy: NetworkPolicy | undefined;
}
