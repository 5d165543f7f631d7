/*
 * taskrouter-opentree: runs a program with fd 3 set to a detached copy of a
 * directory's mount (open_tree(2) with OPEN_TREE_CLONE), so that whoever
 * holds fd 3 reaches that directory and what is below it, and nothing else:
 * `..` at the root of a detached mount stays there, so does the
 * /proc/PID/fd/3 magic link. The runc runtime starts each task's agent
 * (native/task-agent.c) this way: the agent runs inside the task, and a
 * process of the task that could take its fd (a runtime_debug exec holds
 * CAP_SYS_PTRACE) must not walk up from it to this machine's files.
 *
 * Usage: taskrouter-opentree DIR PROGRAM [ARG...]
 *   fd 3 of PROGRAM: DIR's detached tree (O_RDONLY directory, not close-on-exec);
 *   fds 0-2 are passed on; PROGRAM is a path (no PATH search).
 * Exits 125 with a line on stderr when DIR cannot be opened or PROGRAM not run.
 * The detached mount is unmounted by the kernel when its last fd is closed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: taskrouter-opentree DIR PROGRAM [ARG...]\n");
    return 125;
  }
  int fd = (int)syscall(SYS_open_tree, AT_FDCWD, argv[1], OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "taskrouter-opentree: %s: %s\n", argv[1], strerror(errno));
    return 125;
  }
  if (fd != 3) {
    if (dup2(fd, 3) < 0) {
      fprintf(stderr, "taskrouter-opentree: dup2: %s\n", strerror(errno));
      return 125;
    }
    close(fd);
  } else if (fcntl(3, F_SETFD, 0) < 0) {
    fprintf(stderr, "taskrouter-opentree: fcntl: %s\n", strerror(errno));
    return 125;
  }
  execv(argv[2], argv + 2);
  fprintf(stderr, "taskrouter-opentree: %s: %s\n", argv[2], strerror(errno));
  return 125;
}
