/*
 * taskrouter-mount: places a mount the router made on the host into a
 * running task's mount namespace, or takes it out again. For OCI runtimes
 * whose containers do not receive mount events from the host (crun binds the
 * rootfs privately, whatever rootfsPropagation says).
 *
 *   taskrouter-mount attach PID PATH      fd 3: the root of the mount to place
 *   taskrouter-mount detach PID PATH DEV  DEV: the mount's device, MAJOR:MINOR
 *
 * attach clones the mount open as fd 3 (open_tree, this mount only), enters
 * the mount namespace of process PID (the task's init) and moves the clone
 * onto PATH, a path inside the task resolved in the task's own root with no
 * symlink followed. detach lazily unmounts the topmost mount at PATH in that
 * namespace, only if it is of device DEV: PATH's parent is opened with no
 * symlink followed and the unmount names the last component from there, so a
 * task that swaps a directory for a symlink meanwhile cannot make it unmount
 * anything else (e.g. its read-only /proc/sys). Exit 0 on success; otherwise a
 * one-line reason on stderr and exit 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef MOVE_MOUNT_T_EMPTY_PATH
#define MOVE_MOUNT_T_EMPTY_PATH 0x00000040
#endif
#ifndef UMOUNT_NOFOLLOW
#define UMOUNT_NOFOLLOW 0x00000008
#endif

static int fail(const char *what) {
  fprintf(stderr, "taskrouter-mount: %s: %s\n", what, strerror(errno));
  return 1;
}

/* Enters the mount namespace of `pid` (its root and cwd become that namespace's root). */
static int enter(const char *pid) {
  char *end;
  long n = strtol(pid, &end, 10);
  if (*pid == '\0' || *end != '\0' || n < 2) {
    errno = EINVAL;
    return fail("pid");
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/%ld/ns/mnt", n);
  int ns = open(path, O_RDONLY | O_CLOEXEC);
  if (ns < 0) return fail(path);
  if (setns(ns, CLONE_NEWNS) < 0) return fail("setns");
  close(ns);
  if (chdir("/") < 0) return fail("chdir /");
  return 0;
}

static int attach(const char *pid, const char *path) {
  int tree = (int)syscall(SYS_open_tree, 3, "", OPEN_TREE_CLONE | O_CLOEXEC | AT_EMPTY_PATH);
  if (tree < 0) return fail("open_tree fd 3");
  if (enter(pid)) return 1;
  struct open_how how = {
      .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
      .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
  };
  int target = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
  if (target < 0) return fail(path);
  if (syscall(SYS_move_mount, tree, "", target, "",
              MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0) {
    return fail("move_mount");
  }
  return 0;
}

/* Opens `path` (absolute) as a directory with no symlink followed, in the current root. */
static int open_dir(const char *path) {
  struct open_how how = {
      .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
      .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
  };
  return (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
}

static int detach(const char *pid, const char *path, const char *dev) {
  unsigned int want_major, want_minor;
  char extra;
  if (sscanf(dev, "%u:%u%c", &want_major, &want_minor, &extra) != 2) {
    errno = EINVAL;
    return fail("device");
  }
  char parent[4096];
  const char *slash = strrchr(path, '/');
  size_t plen = (size_t)(slash - path);
  if (slash[1] == '\0' || plen >= sizeof parent) {
    errno = EINVAL;
    return fail(path);
  }
  memcpy(parent, path, plen);
  parent[plen] = '\0';
  if (enter(pid)) return 1;
  int dir = open_dir(plen == 0 ? "/" : parent);
  if (dir < 0 || fchdir(dir) < 0) return fail(parent);
  struct stat st;
  if (fstatat(dir, slash + 1, &st, AT_SYMLINK_NOFOLLOW) < 0) return fail(path);
  if (!S_ISDIR(st.st_mode) || major(st.st_dev) != want_major || minor(st.st_dev) != want_minor) {
    errno = ESTALE;
    return fail(path);
  }
  if (umount2(slash + 1, MNT_DETACH | UMOUNT_NOFOLLOW) < 0) return fail(path);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 4 && argv[3][0] == '/' && strcmp(argv[1], "attach") == 0) {
    return attach(argv[2], argv[3]);
  }
  if (argc == 5 && argv[3][0] == '/' && strcmp(argv[1], "detach") == 0) {
    return detach(argv[2], argv[3], argv[4]);
  }
  fprintf(stderr,
          "usage: taskrouter-mount attach PID /PATH (fd 3: the mount) | detach PID /PATH DEV\n");
  return 2;
}
