import { constants } from "node:fs";
import { open } from "node:fs/promises";
import { deviceName, mountInfo } from "../../linux/mountinfo.ts";
import { runTool } from "../../util/run-tool.ts";
import { nativeHelper } from "../native.ts";

/**
 * Mounts the router makes below a task's rootfs on the host, as the task sees
 * them. With runc (rootfsPropagation rslave) the kernel propagates them into
 * the running container by itself. crun binds the rootfs privately, so its
 * containers never see them: there the mount is cloned into the task's mount
 * namespace with the taskrouter-mount helper (native/mount-into.c). Which
 * case applies is not guessed from the runtime's name: the task's own mount
 * table (/proc/<init>/mountinfo) is read after every mount.
 */

/** The task's mount points (its own paths) whose filesystem is device `dev`, in mount order. */
async function taskMountsOf(initPid: number, dev: number): Promise<string[]> {
  const name = deviceName(dev);
  return (await mountInfo(initPid)).filter((m) => m.device === name).map((m) => m.mountPoint);
}

/**
 * Makes the mount whose root is the host directory `hostPath` (device and
 * inode `root`, below `rootfs`) visible in the task whose init is `initPid`,
 * at the same path below the task's root. Nothing to do when the runtime
 * already propagated it; throws when the task still does not see it.
 */
export async function exposeMount(
  initPid: number,
  rootfs: string,
  hostPath: string,
  root: { dev: number; ino: number },
): Promise<void> {
  if ((await taskMountsOf(initPid, root.dev)).length > 0) return;
  if (!hostPath.startsWith(`${rootfs}/`)) {
    throw new Error(`mount ${hostPath} is not below the task's rootfs ${rootfs}`);
  }
  const taskPath = hostPath.slice(rootfs.length);
  const fh = await open(
    hostPath,
    constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW,
  );
  try {
    // The path is the task's to change: clone only the very mount we made.
    const st = await fh.stat();
    if (st.dev !== root.dev || st.ino !== root.ino) {
      throw new Error(`${hostPath} is no longer the root of the new mount`);
    }
    await runTool(nativeHelper("taskrouter-mount"), ["attach", String(initPid), taskPath], {
      fd: fh.fd,
    });
  } finally {
    await fh.close();
  }
  if ((await taskMountsOf(initPid, root.dev)).length === 0) {
    throw new Error(`the task does not see the mount at ${taskPath}`);
  }
}

/**
 * Detaches, in the task whose init is `initPid`, what is still mounted there
 * from device `dev` after the router detached its own mount (nothing when
 * the unmount propagated).
 */
export async function hideMount(initPid: number, dev: number): Promise<void> {
  // One at a time, the topmost first: mounts below one go with it.
  for (let pass = 0; pass < 8; pass++) {
    const left = (await taskMountsOf(initPid, dev)).at(-1);
    if (left === undefined) return;
    const args = ["detach", String(initPid), left, deviceName(dev)];
    await runTool(nativeHelper("taskrouter-mount"), args);
  }
  throw new Error(`the task still has mounts of device ${deviceName(dev)}`);
}
