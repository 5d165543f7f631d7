import { mkdir, readdir } from "node:fs/promises";
import { join } from "node:path";
import { FailedPreconditionError, ResourceExhaustedError } from "../../errors.ts";
import type { NetworkPolicy, TaskNetworkInfo } from "../runtime.ts";
import { type Cidr, formatAddress, formatCidr, parseCidr, subBlock } from "./cidr.ts";
import { enforce, type NetRecord, readRecord, writeRecord } from "./net-record.ts";
import {
  assertOwnNetns,
  CommandError,
  enableForwarding,
  hostInetTables,
  hostVeths,
  ipBatch,
  nft,
  runCommand,
} from "./net-tools.ts";
import { dropTable } from "./rules.ts";
import { socketCgroup } from "./socket-cgroup.ts";

/** Prefix of each task's block: a /30 (network, gateway, task, broadcast). */
const BLOCK_PREFIX = 30;
/** The interface the task sees. */
const TASK_IF = "eth0";

/**
 * The network of `open` tasks (docs/DECISIONS.md, "Network policy"): a veth
 * pair per task, its host end this machine's gateway for the task, NAT
 * out of this machine, and the task's policy as an nftables table inside
 * the task's namespace plus a filter on its veth in the host's. The task's
 * namespace is its init's (the OCI runtime made it): a process that joins
 * it (by the init's pid) shares all of this.
 *
 * Blocks are /30s of `subnet`; the host end's name is derived from its
 * block, so this machine's link table is the allocator: creating the link
 * fails when another task (of any router) holds the block.
 */
export class TaskNetworks {
  private readonly records = new Map<string, NetRecord>();
  /** One change at a time per task (attach, policy, detach). */
  private readonly queues = new Map<string, Promise<unknown>>();

  /**
   * @param subnet the IPv4 block the tasks' /30s come from (`serve --task-subnet`)
   * @param tag the router's tag: names its host tables, marks its links
   */
  constructor(
    private readonly subnet: Cidr,
    private readonly tag: string,
  ) {}

  private serial<T>(taskId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(taskId) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.queues.set(taskId, tail);
    void tail.then(() => {
      if (this.queues.get(taskId) === tail) this.queues.delete(taskId);
    });
    return next;
  }

  private alias(taskId: string): string {
    return `taskrouter ${this.tag} ${taskId}`;
  }

  /**
   * Gives task `taskId` (init `pid`; undefined: stopped, nothing to do) its
   * network, or adopts the one it has. `fresh`: the container was just
   * created, so whatever the record names died with the old one. A policy in
   * the record is enforced again, before the task's link comes up.
   */
  attach(taskId: string, bundle: string, pid: number | undefined, fresh: boolean): Promise<void> {
    return this.serial(taskId, async () => {
      const old = await readRecord(bundle);
      if (old) this.records.set(taskId, old);
      if (pid === undefined) return;
      await assertOwnNetns(pid);
      if (old && !fresh && (await this.linkAlive(old.veth, taskId))) {
        const now = await enforce(old, pid); // with its sidecars still running
        this.records.set(taskId, now);
        await writeRecord(bundle, now);
        return;
      }
      if (old) await this.remove(taskId, old);
      // A new namespace: sidecars of the old one (if any still run) are not in it.
      const rec = await this.createLink(taskId, pid);
      if (old?.policy) rec.policy = old.policy;
      if (old?.nextMark) rec.nextMark = old.nextMark;
      try {
        await writeRecord(bundle, rec);
        this.records.set(taskId, rec);
        await enforce(rec, pid);
        await enableForwarding();
        await ipBatch([
          `address add ${rec.gateway}/${BLOCK_PREFIX} dev ${rec.veth}`,
          `link set ${rec.veth} up`,
        ]);
        await ipBatch(
          [
            `address add ${rec.address}/${BLOCK_PREFIX} dev ${TASK_IF}`,
            `link set ${TASK_IF} up`,
            `route add default via ${rec.gateway} dev ${TASK_IF}`,
          ],
          pid,
        );
      } catch (err) {
        await this.remove(taskId, rec).catch(() => undefined);
        throw err;
      }
    });
  }

  /** Enforces `policy` for task `taskId` (init `pid`), then records it. */
  setPolicy(taskId: string, bundle: string, pid: number, policy: NetworkPolicy): Promise<void> {
    return this.serial(taskId, async () => {
      const rec = this.records.get(taskId);
      if (!rec) throw new FailedPreconditionError(`task ${taskId} has no network of its own`);
      await assertOwnNetns(pid);
      await this.change(taskId, bundle, pid, rec, { ...rec, policy });
    });
  }

  /**
   * Enforces `next` instead of `rec` for task `taskId` (init `pid`), then
   * records it; on failure puts `rec` back (best effort) and throws: nothing changed.
   */
  private async change(
    taskId: string,
    bundle: string,
    pid: number | undefined,
    rec: NetRecord,
    next: NetRecord,
  ): Promise<void> {
    let now: NetRecord;
    try {
      now = await enforce(next, pid);
    } catch (err) {
      await enforce(rec, pid).catch(() => undefined);
      throw err;
    }
    await writeRecord(bundle, now);
    this.records.set(taskId, now);
  }

  /**
   * Enforces `policy` on the traffic of sidecar `ctr` of task `taskId`
   * (init `pid`), whose processes will be in cgroup `cgroupsPath`: that
   * cgroup is made now (the rule names it, and it must exist before the
   * sidecar's first process; the caller removes it if the sidecar does not
   * start), so the policy is in force before the sidecar runs.
   * FailedPrecondition when the task has no network of its own.
   */
  addSidecar(
    taskId: string,
    bundle: string,
    pid: number,
    side: { ctr: string; cgroupsPath: string; policy: NetworkPolicy },
  ): Promise<void> {
    return this.serial(taskId, async () => {
      const rec = this.records.get(taskId);
      if (!rec) throw new FailedPreconditionError(`task ${taskId} has no network of its own`);
      await assertOwnNetns(pid);
      await mkdir(socketCgroup(side.cgroupsPath).dir, { recursive: true });
      const mark = rec.nextMark ?? 1;
      const others = (rec.sidecars ?? []).filter((s) => s.ctr !== side.ctr);
      const next = { ...rec, nextMark: mark + 1, sidecars: [...others, { ...side, mark }] };
      await this.change(taskId, bundle, pid, rec, next);
    });
  }

  /**
   * Removes sidecar `ctr`'s policy (it ended; nothing when it had none).
   * `pid`: the task's init (undefined or gone: only the host's table changes).
   */
  removeSidecar(
    taskId: string,
    bundle: string,
    pid: number | undefined,
    ctr: string,
  ): Promise<void> {
    return this.serial(taskId, async () => {
      const rec = this.records.get(taskId);
      const side = rec?.sidecars?.find((s) => s.ctr === ctr);
      if (!rec || !side) return;
      const sidecars = (rec.sidecars ?? []).filter((s) => s !== side);
      const inNetns =
        pid !== undefined &&
        (await assertOwnNetns(pid).then(
          () => true,
          () => false,
        ));
      await this.change(taskId, bundle, inNetns ? pid : undefined, rec, { ...rec, sidecars });
    });
  }

  /** The task's network as set up (undefined: none). */
  info(taskId: string): TaskNetworkInfo | undefined {
    const r = this.records.get(taskId);
    return r && { address: r.address, gateway: r.gateway, policy: r.policy };
  }

  /** Removes what this machine holds for task `taskId` (after its container is gone). */
  detach(taskId: string, bundle: string): Promise<void> {
    return this.serial(taskId, async () => {
      const rec = this.records.get(taskId) ?? (await readRecord(bundle));
      this.records.delete(taskId);
      if (rec) await this.remove(taskId, rec);
    });
  }

  /**
   * Removes the host tables and links of this router's tasks that no bundle
   * under `bundlesDir` claims any more (a task removed while the router was
   * down, or a removal that stopped half way).
   */
  async sweep(bundlesDir: string): Promise<void> {
    const claimed = new Set<string>();
    for (const name of await readdir(bundlesDir).catch(() => [] as string[])) {
      const rec = await readRecord(join(bundlesDir, name));
      if (rec) claimed.add(rec.table).add(rec.veth);
    }
    let tables: string[];
    try {
      tables = await hostInetTables();
    } catch {
      return; // no nft: nothing of ours can exist
    }
    for (const t of tables) {
      if (t.startsWith(`tr_${this.tag}_`) && !claimed.has(t)) await nft(dropTable(t));
    }
    for (const l of await hostVeths().catch(() => [])) {
      if (l.alias?.startsWith(`taskrouter ${this.tag} `) && !claimed.has(l.name)) {
        await runCommand(["ip", "link", "del", l.name]).catch(() => undefined);
      }
    }
  }

  private async linkAlive(veth: string, taskId: string): Promise<boolean> {
    return (await hostVeths()).some((l) => l.name === veth && l.alias === this.alias(taskId));
  }

  private async remove(taskId: string, rec: NetRecord): Promise<void> {
    await nft(dropTable(rec.table));
    if (await this.linkAlive(rec.veth, taskId)) {
      await runCommand(["ip", "link", "del", rec.veth]).catch(() => undefined);
    }
  }

  /**
   * Takes the first free /30 of the subnet by creating its veth pair, the
   * task's end straight in the namespace of `pid` (as eth0, down).
   */
  private async createLink(taskId: string, pid: number): Promise<NetRecord> {
    const taken = new Set((await hostVeths()).map((l) => l.name));
    for (let i = 0; ; i++) {
      const block = subBlock(this.subnet, BLOCK_PREFIX, i);
      if (!block) {
        throw new ResourceExhaustedError(
          `no free /${BLOCK_PREFIX} left in the task subnet ${formatCidr(this.subnet)} (--task-subnet)`,
        );
      }
      const veth = `trn${block.net.toString(16).padStart(8, "0")}`;
      if (taken.has(veth)) continue;
      try {
        await runCommand([
          "ip",
          "link",
          "add",
          veth,
          "type",
          "veth",
          "peer",
          "name",
          TASK_IF,
          "netns",
          String(pid),
        ]);
      } catch (err) {
        if (err instanceof CommandError && /exists/i.test(err.stderr)) continue; // taken meanwhile
        throw err;
      }
      await runCommand(["ip", "link", "set", veth, "alias", this.alias(taskId)]);
      return {
        block: formatCidr(block),
        gateway: formatAddress(block.net + 1n, 4),
        address: formatAddress(block.net + 2n, 4),
        veth,
        table: `tr_${this.tag}_${veth.slice(3)}`,
      };
    }
  }
}

/** Where `--network open` tasks get their addresses unless `serve --task-subnet` says otherwise. */
export const DEFAULT_TASK_SUBNET = "10.213.0.0/16";

/**
 * The task subnet `text` (default DEFAULT_TASK_SUBNET): an IPv4 CIDR of
 * /8 to /30 (each task takes a /30). Throws for anything else.
 */
export function taskSubnet(text: string | undefined): Cidr {
  const c = parseCidr(text ?? DEFAULT_TASK_SUBNET);
  if (c?.family !== 4 || c.prefix < 8 || c.prefix > BLOCK_PREFIX) {
    throw new Error(`task subnet must be an IPv4 CIDR from /8 to /30, not ${JSON.stringify(text)}`);
  }
  return c;
}
