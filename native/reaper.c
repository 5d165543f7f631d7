/*
 * taskrouter-reaper: runs a program as the child of a child subreaper
 * (PR_SET_CHILD_SUBREAPER), so that the processes it leaves running are
 * reaped by this process the moment they exit. The runc runtime starts runsc
 * containers through it (`runsc run --detach`, `runsc restore --detach`):
 * runsc's sandbox and gofer outlive the command, and `runsc delete` polls
 * until they are reaped, not merely dead. Orphans of the router's children
 * are otherwise reaped by the machine's init, which on some VMs gets to them
 * only seconds later.
 *
 * Usage: taskrouter-reaper PROGRAM [ARG...]   (PROGRAM a path: no PATH search)
 *   fd 3: where the report goes (a pipe); PROGRAM does not get it. The child
 *   runs PROGRAM with fds 0-2, the environment and the signal dispositions of
 *   this process (SIGPIPE as it was; this process ignores it). When PROGRAM
 *   ends this process writes one line to fd 3 and closes it:
 *     exit N      PROGRAM exited with code N
 *     signal N    PROGRAM was killed by signal N
 *   then points fds 0-2 at /dev/null and reaps every process reparented to
 *   it; it exits 0 once it has no child left (never while one runs).
 * Exits 125 with a line on stderr, and no report, when fd 3 is not open or
 * PROGRAM cannot be started (fork or exec failed).
 * Run it in a session of its own (the router's `detached` spawn): it must
 * outlive the router, as the containers do.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: taskrouter-reaper PROGRAM [ARG...]\n");
    return 125;
  }
  if (fcntl(3, F_SETFD, FD_CLOEXEC) < 0) {
    perror("taskrouter-reaper: fd 3");
    return 125;
  }
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
    perror("taskrouter-reaper: PR_SET_CHILD_SUBREAPER");
    return 125;
  }
  int report[2]; /* the child's exec error, if any (close-on-exec: empty on success) */
  if (pipe2(report, O_CLOEXEC) < 0) {
    perror("taskrouter-reaper: pipe");
    return 125;
  }
  pid_t child = fork();
  if (child < 0) {
    perror("taskrouter-reaper: fork");
    return 125;
  }
  if (child == 0) {
    close(report[0]);
    execv(argv[1], argv + 1);
    int e = errno;
    ssize_t w = write(report[1], &e, sizeof e);
    (void)w;
    _exit(125);
  }
  close(report[1]);
  signal(SIGPIPE, SIG_IGN); /* a reader gone before the report must not end the reaping */
  int e = 0;
  ssize_t n;
  do {
    n = read(report[0], &e, sizeof e);
  } while (n < 0 && errno == EINTR);
  close(report[0]);
  if (n == (ssize_t)sizeof e) {
    waitpid(child, NULL, 0);
    fprintf(stderr, "taskrouter-reaper: %s: %s\n", argv[1], strerror(e));
    return 125;
  }
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      return 0; /* ECHILD: nothing left to reap */
    }
    if (pid != child) continue;
    dprintf(3, WIFEXITED(status) ? "exit %d\n" : "signal %d\n",
            WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    close(3);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
      dup2(null, 0);
      dup2(null, 1);
      dup2(null, 2);
      close(null);
    }
  }
}
