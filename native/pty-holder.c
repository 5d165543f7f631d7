/*
 * taskrouter-pty: the terminal of a sidecar container whose TaskContainerCreate
 * asked for one (`pty_info.enabled`). Runs INSIDE the sidecar, bind-mounted
 * read-only at /.taskrouter/pty (linked statically: it runs in any image):
 *
 *   /.taskrouter/pty STATUSFILE ROWS COLS PROGRAM [ARG...]
 *
 * The sidecar's init (tini -g) starts it in place of the exec wrapper; PROGRAM
 * is the exec wrapper running the entrypoint (`/.taskrouter/exec -s
 * STATUSFILE 1 ARGV...`), which still writes the entrypoint's real exit status
 * to STATUSFILE. This program:
 *
 * 1. opens a new terminal on the container's own devpts instance (/dev/ptmx,
 *    else /dev/pts/ptmx; the slave through TIOCGPTPEER, no path lookup, else
 *    ptsname); sets its window size to ROWS x COLS (1-65535 each) and IUTF8 on
 *    top of the kernel's default termios (as node-pty's terminals of PTY
 *    execs), all before PROGRAM runs, so the entrypoint sees the size at once;
 * 2. starts PROGRAM as the leader of a new session whose controlling terminal
 *    is the slave, on its stdin, stdout and stderr (so the terminal's
 *    foreground process group is PROGRAM's, which the entrypoint joins);
 * 3. reads and discards everything written to the terminal (nothing reads a
 *    sidecar's output; without a reader the entrypoint would block once the
 *    terminal's buffer is full). It keeps a descriptor of the slave itself, so
 *    the master never reports a hangup: the loop simply reads until PROGRAM
 *    exits. Nothing is ever written to the master (no input reaches a
 *    sidecar's terminal: reads by the entrypoint wait);
 * 4. forwards every catchable signal it receives to PROGRAM's process group
 *    (tini -g signals ours; the exec wrapper ignores them, the entrypoint gets
 *    them as it would without a terminal);
 * 5. reaps every child (it is PID 1 where there is no tini) and, once PROGRAM
 *    has exited, exits with its code (128+n when signal n ended it). The rest
 *    of the sidecar dies with its init, as without a terminal.
 *
 * Everything it reads comes from the container: it is only counted as bytes.
 * An error before PROGRAM runs: one line on stderr (the init's /dev/null),
 * `code 126` written to STATUSFILE (so the sidecar ends with FAILURE 126, not
 * without a status), exit 126.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

static const char *status_file;
static volatile pid_t child = -1;
static int wake[2] = {-1, -1};

/* Setup failed: the reason on stderr, `code 126` to the status file. */
static int fail(const char *what) {
  int err = errno;
  fprintf(stderr, "taskrouter-pty: %s: %s\n", what, strerror(err));
  int fd = open(status_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd >= 0) {
    static const char line[] = "code 126\n";
    ssize_t w = write(fd, line, sizeof line - 1);
    (void)w;
    fsync(fd);
    close(fd);
  }
  if (child > 0) kill(-child, SIGKILL);
  return 126;
}

/* glibc keeps signals 32 and 33 for itself; SIGCHLD is ours (see on_child). */
static int forwardable(int sig) {
  return sig != SIGKILL && sig != SIGSTOP && sig != SIGCHLD && sig != 32 && sig != 33;
}

static void on_signal(int sig) {
  int saved = errno;
  if (child > 0) kill(-child, sig);
  errno = saved;
}

static void on_child(int sig) {
  (void)sig;
  int saved = errno;
  ssize_t w = write(wake[1], "", 1);
  (void)w;
  errno = saved;
}

/* A window dimension: 1-65535, digits only; 0 for anything else. */
static unsigned short dimension(const char *text) {
  char *end;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < 1 || v > 65535) return 0;
  return (unsigned short)v;
}

/* The slave of `master`, opened without becoming anyone's controlling terminal. */
static int open_slave(int master) {
  int fd = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (fd >= 0 || (errno != EINVAL && errno != ENOTTY)) return fd;
  char name[64];
  if (ptsname_r(master, name, sizeof name) != 0) return -1;
  return open(name, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NOFOLLOW);
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: taskrouter-pty STATUSFILE ROWS COLS PROGRAM [ARG...]\n");
    return 126;
  }
  status_file = argv[1];
  struct winsize ws = {.ws_row = dimension(argv[2]), .ws_col = dimension(argv[3])};
  if (ws.ws_row == 0 || ws.ws_col == 0) {
    errno = EINVAL;
    return fail("window size");
  }
  int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
  if (master < 0) master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
  if (master < 0) return fail("open /dev/ptmx");
  if (unlockpt(master) != 0) return fail("unlockpt");
  int slave = open_slave(master);
  if (slave < 0) return fail("open the terminal");
  struct termios t;
  if (tcgetattr(slave, &t) != 0) return fail("tcgetattr");
  t.c_iflag |= IUTF8;
  if (tcsetattr(slave, TCSANOW, &t) != 0) return fail("tcsetattr");
  if (ioctl(master, TIOCSWINSZ, &ws) != 0) return fail("window size");
  if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) return fail("pipe");

  /* Signals wait until `child` is known; the child restores the mask before exec. */
  sigset_t all, old;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, &old);
  pid_t pid = fork();
  if (pid < 0) return fail("fork");
  if (pid == 0) {
    if (setsid() < 0 || ioctl(slave, TIOCSCTTY, 0) != 0) _exit(126);
    for (int fd = 0; fd < 3; fd++) {
      if (dup2(slave, fd) < 0) _exit(126);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    execv(argv[4], argv + 4);
    dprintf(STDERR_FILENO, "taskrouter-pty: %s: %s\r\n", argv[4], strerror(errno));
    _exit(126);
  }
  child = pid;
  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  for (int sig = 1; sig < NSIG; sig++) {
    if (forwardable(sig)) sigaction(sig, &sa, NULL);
  }
  struct sigaction sc = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
  sigemptyset(&sc.sa_mask);
  sigaction(SIGCHLD, &sc, NULL);
  sigprocmask(SIG_SETMASK, &old, NULL);

  static char buf[65536];
  int status = 0;
  int watching = 1; /* the master; only an error it should never give stops it */
  for (;;) {
    /* Reap everything; PROGRAM's end ends the loop. */
    pid_t r;
    int st;
    int done = 0;
    while ((r = waitpid(-1, &st, WNOHANG)) > 0) {
      if (r == pid) {
        status = st;
        done = 1;
      }
    }
    if (done) break;
    struct pollfd p[2] = {{.fd = watching ? master : -1, .events = POLLIN},
                          {.fd = wake[0], .events = POLLIN}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return fail("poll");
    }
    if (p[1].revents & POLLIN) {
      while (read(wake[0], buf, sizeof buf) > 0) {
      }
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      /* Discard what is there now; EAGAIN ends the round. */
      ssize_t n;
      while ((n = read(master, buf, sizeof buf)) > 0) {
      }
      if (n == 0 || (errno != EAGAIN && errno != EINTR)) watching = 0;
    }
  }
  close(slave);
  close(master);
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}
