/*
 * taskrouter-console: the terminal side of a PTY exec for OCI runtimes whose
 * `exec` takes `--console-socket` instead of `--tty` (runsc).
 *
 *   taskrouter-console SOCKET PROGRAM [ARG...]
 *
 * Runs on the host with a terminal of the router's as stdin/stdout (node-pty).
 * It listens on the unix socket SOCKET, runs PROGRAM (the runtime's exec,
 * given `--console-socket SOCKET`), receives the master of the task's
 * terminal over the socket (SCM_RIGHTS), then relays bytes both ways: its own
 * terminal (in raw mode, so bytes pass untouched) to the master, the master
 * to its stdout. The task's terminal gets this terminal's size at once and on
 * every SIGWINCH (a resize of the router's terminal). When PROGRAM exits, the
 * rest of the master's output is copied and the relay exits with PROGRAM's
 * exit code (128+n when it died of signal n). Errors: one line on stderr, 125.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static volatile sig_atomic_t winch = 1;
static void on_winch(int sig) {
  (void)sig;
  winch = 1;
}

static pid_t child = -1;

/* Reports `what`; ends the runtime's exec (and with it the command) if it was started. */
static int fail(const char *what) {
  fprintf(stderr, "taskrouter-console: %s: %s\r\n", what, strerror(errno));
  if (child > 0) {
    kill(child, SIGKILL);
    while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {
    }
  }
  return 125;
}

static int exit_code(int status) {
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

/* Writes all of buf, retrying on EINTR/EAGAIN; -1 when the peer is gone. */
static int write_all(int fd, const char *buf, ssize_t n) {
  while (n > 0) {
    ssize_t w = write(fd, buf, (size_t)n);
    if (w < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return -1;
    }
    buf += w;
    n -= w;
  }
  return 0;
}

/* The fd passed in one SCM_RIGHTS message on connection `conn`, or -1. */
static int receive_fd(int conn) {
  char data[256];
  char ctrl[CMSG_SPACE(sizeof(int))];
  struct iovec iov = {.iov_base = data, .iov_len = sizeof data};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl,
                       .msg_controllen = sizeof ctrl};
  if (recvmsg(conn, &msg, MSG_CMSG_CLOEXEC) < 0) return -1;
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
    errno = EPROTO;
    return -1;
  }
  int fd;
  memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return fd;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: taskrouter-console SOCKET PROGRAM [ARG...]\n");
    return 125;
  }
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(argv[1]) >= sizeof addr.sun_path) {
    errno = ENAMETOOLONG;
    return fail(argv[1]);
  }
  strcpy(addr.sun_path, argv[1]);
  unlink(argv[1]);
  int lsock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lsock < 0 || bind(lsock, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lsock, 1) < 0) {
    return fail("console socket");
  }
  struct sigaction sa = {.sa_handler = on_winch, .sa_flags = SA_RESTART};
  sigaction(SIGWINCH, &sa, NULL);

  child = fork();
  if (child < 0) return fail("fork");
  if (child == 0) {
    execvp(argv[2], argv + 2);
    fprintf(stderr, "taskrouter-console: %s: %s\r\n", argv[2], strerror(errno));
    _exit(127);
  }

  /* Wait for the master, or for the runtime to give up before sending it. */
  int master = -1;
  int status;
  for (;;) {
    struct pollfd p = {.fd = lsock, .events = POLLIN};
    int r = poll(&p, 1, 100);
    if (r < 0 && errno != EINTR) return fail("poll");
    if (r > 0) {
      int conn = accept4(lsock, NULL, NULL, SOCK_CLOEXEC);
      if (conn < 0 && errno == EINTR) continue;
      if (conn < 0) return fail("accept");
      do {
        master = receive_fd(conn);
      } while (master < 0 && errno == EINTR);
      close(conn);
      if (master < 0) return fail("receive terminal");
      break;
    }
    if (waitpid(child, &status, WNOHANG) == child) {
      unlink(argv[1]);
      return exit_code(status);
    }
  }
  close(lsock);
  unlink(argv[1]);

  struct termios raw;
  if (tcgetattr(STDIN_FILENO, &raw) == 0) {
    cfmakeraw(&raw);
    tcsetattr(STDIN_FILENO, TCSANOW, &raw);
  }
  char buf[65536];
  int in_open = 1;
  int exited = 0;
  for (;;) {
    if (winch) {
      winch = 0;
      struct winsize ws;
      if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) ioctl(master, TIOCSWINSZ, &ws);
    }
    if (!exited && waitpid(child, &status, WNOHANG) == child) exited = 1;
    struct pollfd p[2] = {{.fd = master, .events = POLLIN}, {.fd = STDIN_FILENO, .events = POLLIN}};
    /* Once the runtime's exec is gone, only what is left in the master is copied. */
    int r = poll(p, in_open && !exited ? 2 : 1, exited ? 0 : 100);
    if (r < 0 && errno != EINTR) return fail("poll");
    if (r <= 0) {
      if (exited) break;
      continue;
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(master, buf, sizeof buf);
      if (n > 0) {
        if (write_all(STDOUT_FILENO, buf, n) < 0) break;
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        /* EIO: every writer of the task's terminal closed it. */
        if (!exited) waitpid(child, &status, 0);
        exited = 1;
        break;
      }
    }
    if (in_open && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
      if (n > 0) {
        if (write_all(master, buf, n) < 0) in_open = 0;
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        in_open = 0;
      }
    }
  }
  if (!exited) waitpid(child, &status, 0);
  return exit_code(status);
}
