/**
 * The mount primitives moved to src/linux/ (one layer for images/ and
 * runtime/); this module keeps their old import path for the tests that use
 * it. New code imports ../../linux/mount.ts and ../../linux/mountinfo.ts.
 */
export { makeShared, mountOverlay, UNSAFE_MOUNT_PATH, unmountAll } from "../../linux/mount.ts";
export { deviceName, type MountInfo, mountInfo, mountsUnder } from "../../linux/mountinfo.ts";
