import { HYBRID_V2_CONTROLLERS } from "../../linux/cgroup.ts";

// The cgroup primitives live in src/linux/cgroup.ts; re-exported for the tests that import them here.
export { cgroupDirs, hybridWithV2Controllers } from "../../linux/cgroup.ts";

/**
 * The command prefix that runs `binary` with the controller list of a hybrid
 * host's cgroup2 mount reading empty (see `OciFlavor.hidesHybridV2Controllers`),
 * in a private mount namespace of its own (mount propagation left as it is,
 * so mounts made below a task's rootfs still reach it); crun then uses the v1
 * controllers, as runc does. Nothing outside that namespace changes.
 */
export function hidingV2Controllers(binary: string): string[] {
  return [
    "unshare",
    "-m",
    "--propagation",
    "unchanged",
    "/bin/sh",
    "-c",
    `mount --bind /dev/null ${HYBRID_V2_CONTROLLERS} && exec "$0" "$@"`,
    binary,
  ];
}
