import { FailedPreconditionError } from "../../errors.ts";
import { quote } from "../../limits.ts";
import type { NetworkPolicy } from "../../runtime/runtime.ts";
import { checkPolicyLists, type DomainResolver, resolvePolicy } from "../network-policy.ts";
import type { ContainerRequest } from "./container-request.ts";
import type { ContainerTask } from "./container-views.ts";

/**
 * The sidecar's own network policy (docs/DECISIONS.md, "Sidecar network
 * policies"), resolved: undefined unless `req` asks for an ALLOWLIST (unset,
 * OPEN, UNSPECIFIED: the task's network and policy apply). An allowlist
 * needs a task created with network "open" (FAILED_PRECONDITION naming the
 * task's network otherwise: "none" has nothing to allow, "host" is this
 * machine's namespace, which the router does not police); its domains are
 * resolved once, now, as TaskSetNetworkAccess's are. Nothing is started or
 * changed here.
 */
export async function sidecarPolicy(
  task: ContainerTask,
  req: ContainerRequest,
  resolve?: DomainResolver,
): Promise<NetworkPolicy | undefined> {
  const net = req.network;
  if (net?.kind !== "allowlist") return undefined;
  const lists = checkPolicyLists(net.cidrs, net.domains);
  const mode = task.spec.network ?? "none";
  if (mode !== "open") {
    throw new FailedPreconditionError(
      `task ${task.id} has network ${quote(mode)}: a sidecar's own ALLOWLIST is enforced in the task's own network namespace, which only tasks created with network "open" have (leave network_access unset to share the task's network)`,
    );
  }
  return resolvePolicy(lists, resolve);
}
