import { existsSync } from "node:fs";
import { readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { NetworkPolicy } from "../runtime.ts";
import { CommandError, nft } from "./net-tools.ts";
import { hostRules, type SidecarRule, taskRules } from "./rules.ts";
import { socketCgroup } from "./socket-cgroup.ts";

/** The file of a task's bundle that keeps its network (so a restarted router finds it). */
const RECORD = "network.json";

/** A sidecar with a network policy of its own (docs/DECISIONS.md, "Sidecar network policies"). */
export interface SidecarNet {
  /** Its container id (`ctr-...`). */
  ctr: string;
  /** Its OCI cgroupsPath: the cgroup its sockets are told apart by. */
  cgroupsPath: string;
  /** Its connections' conntrack mark in the task's namespace (never reused in the task). */
  mark: number;
  policy: NetworkPolicy;
}

/** What is kept of an open task's network, in `<bundle>/network.json`. */
export interface NetRecord {
  /** The task's /30, e.g. 10.213.0.4/30. */
  block: string;
  gateway: string;
  address: string;
  /** The host end of the veth (`trn` + 8 hex digits of the block's address). */
  veth: string;
  /** The host's nftables table of the task (inet family). */
  table: string;
  /** undefined: open. */
  policy?: NetworkPolicy;
  /** Sidecars with a policy of their own; absent: none. */
  sidecars?: SidecarNet[];
  /** The mark the next such sidecar gets (absent: 1). */
  nextMark?: number;
}

export async function readRecord(bundle: string): Promise<NetRecord | undefined> {
  const text = await readFile(join(bundle, RECORD), "utf8").catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as NetRecord;
  } catch {
    return undefined;
  }
}

export async function writeRecord(bundle: string, rec: NetRecord): Promise<void> {
  const file = join(bundle, RECORD);
  await writeFile(`${file}.tmp`, JSON.stringify(rec), { mode: 0o600 });
  await rename(`${file}.tmp`, file);
}

/** `rec` without the sidecars whose cgroup is gone (they ended: nft could not name it). */
function live(rec: NetRecord): { rec: NetRecord; rules: SidecarRule[] } {
  const kept: SidecarNet[] = [];
  const rules: SidecarRule[] = [];
  for (const s of rec.sidecars ?? []) {
    const cgroup = socketCgroup(s.cgroupsPath);
    if (!existsSync(cgroup.dir)) continue;
    kept.push(s);
    rules.push({ mark: s.mark, cgroup, policy: s.policy });
  }
  return { rec: { ...rec, sidecars: kept }, rules };
}

/**
 * Loads the tables of `rec`: the task namespace's (init `pid`; undefined:
 * gone, only the host's) and the host's. Sidecars whose cgroup no longer
 * exists are left out (once more if one vanished while the rules were
 * loaded); returns the record as enforced.
 */
export async function enforce(rec: NetRecord, pid: number | undefined): Promise<NetRecord> {
  for (let attempt = 0; ; attempt++) {
    const now = live(rec);
    try {
      if (pid !== undefined) await nft(taskRules(now.rec.policy, now.rules), pid);
      const side = (now.rec.sidecars ?? []).map((s) => s.policy);
      await nft(hostRules(now.rec, now.rec.policy, side));
      return now.rec;
    } catch (err) {
      const vanished = err instanceof CommandError && /cgroupv2 path fails/.test(err.stderr);
      if (!vanished || attempt > 0) throw err;
    }
  }
}
