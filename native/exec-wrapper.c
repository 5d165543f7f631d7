/*
 * taskrouter-exec: the program every exec of a runc task runs as, ahead of
 * the command: `/.taskrouter/exec [-s STATUSFILE] [-t DEADLINE] MERGE ARGV...` (bind-mounted
 * read-only into each task; linked statically, so it runs in any image, with
 * or without a libc of its own). Also `/.taskrouter/exec -k SIG PGID`: sends
 * SIG to process group PGID (for runtimes whose task processes the host
 * cannot signal: runsc).
 *
 * `runc exec` reports a command killed by signal n as exit code 128+n, the
 * same as `exit 128+n`. This wrapper is the command's parent inside the task,
 * so it sees the real wait status and writes it (`code N` or `signal N`) to
 * fd 3, a file of the router's that the runtime passes in (--preserve-fds 1)
 * and the command never inherits; or, with -s (runtimes without
 * --preserve-fds: runsc), to STATUSFILE, a file in a directory of the
 * router's bind-mounted into the task, synced before the wrapper exits.
 *
 * With -t, DEADLINE is a wall-clock time in milliseconds since the Unix
 * epoch (the host's clock, which the task shares): at that time the wrapper
 * SIGKILLs its whole process group (the command, its group and itself, the
 * same kill the router sends for a timeout), without a round trip through the
 * runtime: that is what lets a timed-out exec's streams end before the
 * client's deadline even where a kill from the host costs a `runsc exec`.
 *
 * It also:
 * - makes itself a process-group leader first (runc's exec already made it a
 *   session leader, then this fails harmlessly; crun's exec without a
 *   terminal does not), so the pid in the runtime's pid file is the group the
 *   router signals;
 * - ignores every catchable signal itself (the command gets the defaults
 *   back), so a signal sent to the exec's process group reaches the command
 *   and the wrapper stays to report how the command ended;
 * - points the command's stderr at its stdout when MERGE is 1 (one pipe,
 *   write order kept by the kernel);
 * - reports a program that cannot start the way the host runtime does:
 *   `taskrouter: NAME: command not found` (127) or `...: Permission denied`
 *   (126);
 * - closes its own stdio once the command runs, so output pipes end with the
 *   command's tree, not with the wrapper.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STATUS_FD 3

/* glibc keeps signals 32 and 33 for itself (thread cancellation, setxid). */
static int catchable(int sig) {
  return sig != SIGKILL && sig != SIGSTOP && sig != SIGCHLD && sig != 32 && sig != 33;
}

static void set_all(void (*handler)(int)) {
  for (int sig = 1; sig < NSIG; sig++) {
    if (catchable(sig)) signal(sig, handler);
  }
}

static int status_fd = STATUS_FD;
static int status_is_file = 0; /* -s: a file to sync before exiting */

static void report(const char *kind, int n) {
  char line[32];
  int len = snprintf(line, sizeof line, "%s %d\n", kind, n);
  while (write(status_fd, line, (size_t)len) < 0 && errno == EINTR) {
  }
  if (status_is_file) fsync(status_fd);
}

/* -k SIG PGID: signal a process group (exit 0, or 1 with the reason). */
static int kill_group(const char *sig, const char *pgid) {
  char *end1, *end2;
  long s = strtol(sig, &end1, 10);
  long g = strtol(pgid, &end2, 10);
  if (*end1 != '\0' || *end2 != '\0' || s < 0 || s >= NSIG || g < 2) {
    fprintf(stderr, "taskrouter: bad signal or group: %s %s\n", sig, pgid);
    return 2;
  }
  if (kill((pid_t)-g, (int)s) < 0) {
    fprintf(stderr, "taskrouter: kill -%ld -%ld: %s\n", s, g, strerror(errno));
    return 1;
  }
  return 0;
}

/*
 * The command could not be started: the shell's one-line reason and code,
 * on stdout when stderr is merged into it (where the command's would be).
 */
static int report_not_started(const char *name, int err, int merge) {
  int missing = err == ENOENT || err == ENOTDIR;
  dprintf(merge ? STDOUT_FILENO : STDERR_FILENO, "taskrouter: %s: %s\n", name,
          missing ? "command not found" : "Permission denied");
  report("code", missing ? 127 : 126);
  return missing ? 127 : 126;
}

/* -t: SIGKILL our whole group (we lead it) when the deadline comes. */
static void on_deadline(int sig) {
  (void)sig;
  kill(0, SIGKILL);
}

/* Arms the deadline (ms since the epoch); returns -1 for a malformed value. */
static int arm_deadline(const char *text) {
  char *end;
  long long at = strtoll(text, &end, 10);
  if (*end != '\0' || at <= 0) return -1;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  long long left = at - ((long long)now.tv_sec * 1000 + now.tv_nsec / 1000000);
  if (left < 1) left = 1;
  struct itimerval it = {{0, 0}, {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000}};
  signal(SIGALRM, on_deadline);
  return setitimer(ITIMER_REAL, &it, NULL);
}

/* Set by the vfork child (it shares our memory) when its execvp failed. */
static volatile int exec_errno;

/*
 * Starts the command with default signal dispositions, stderr on stdout when
 * merging, without the status fd (close-on-exec). vfork: no copy of our page
 * tables, and we resume once the child has exec'd (or failed to). Not
 * posix_spawnp: glibc's leaves its two internal signals (32, 33) ignored in
 * the child, and it refuses a file without `#!` that execvp runs with
 * /bin/sh. Returns the pid, or -1 after reporting why nothing started.
 */
static pid_t start(char **cmd, int merge) {
  fcntl(status_fd, F_SETFD, FD_CLOEXEC);
  exec_errno = 0;
  pid_t pid = vfork();
  if (pid < 0) {
    dprintf(merge ? STDOUT_FILENO : STDERR_FILENO, "taskrouter: fork: %s\n", strerror(errno));
    report("code", 126);
    return -1;
  }
  if (pid == 0) {
    set_all(SIG_DFL);
    if (merge) dup2(STDOUT_FILENO, STDERR_FILENO);
    execvp(cmd[0], cmd);
    exec_errno = errno;
    _exit(127);
  }
  if (exec_errno != 0) {
    waitpid(pid, NULL, 0);
    report_not_started(cmd[0], exec_errno, merge);
    return -1;
  }
  return pid;
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "-k") == 0) return kill_group(argv[2], argv[3]);
  if (argc >= 3 && strcmp(argv[1], "-s") == 0) {
    status_fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    status_is_file = 1;
    if (status_fd < 0) {
      fprintf(stderr, "taskrouter: status file %s: %s\n", argv[2], strerror(errno));
      return 126;
    }
    argc -= 2;
    argv += 2;
  }
  const char *deadline = NULL;
  if (argc >= 3 && strcmp(argv[1], "-t") == 0) {
    deadline = argv[2];
    argc -= 2;
    argv += 2;
  }
  if (argc < 3) {
    fprintf(stderr, "usage: taskrouter-exec [-s STATUSFILE] [-t DEADLINE] MERGE(0|1) PROGRAM [ARG...]\n");
    return 126;
  }
  if (fcntl(status_fd, F_GETFD) < 0) {
    fprintf(stderr, "taskrouter: no status channel on fd %d\n", status_fd);
    return 126;
  }
  int merge = strcmp(argv[1], "1") == 0;
  char **cmd = argv + 2;
  setpgid(0, 0);
  set_all(SIG_IGN);

  pid_t pid = start(cmd, merge);
  if (pid < 0) return exec_errno == ENOENT || exec_errno == ENOTDIR ? 127 : 126;
  if (deadline && arm_deadline(deadline) < 0) {
    kill(0, SIGKILL); /* never run a command past a deadline we could not arm */
  }

  close(STDIN_FILENO);
  close(STDOUT_FILENO);
  close(STDERR_FILENO);
  int status;
  pid_t r;
  do {
    r = waitpid(pid, &status, 0);
  } while (r < 0 && errno == EINTR);
  if (r != pid) return 125;
  if (WIFSIGNALED(status)) {
    report("signal", WTERMSIG(status));
    return 128 + WTERMSIG(status);
  }
  report("code", WEXITSTATUS(status));
  return WEXITSTATUS(status);
}
