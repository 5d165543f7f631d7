/*
 * taskrouter-spawner: starts processes for the router (the runc runtime's
 * `runc exec ...`, the host runtime's commands). The router is a large
 * process: its own fork copies the page tables of its whole heap and blocks
 * its event loop until the child has exec'd (~7 ms here); this small process
 * starts each one with vfork in ~1 ms while the router goes on.
 *
 * One spawner per runtime, the router's child, started once. Requests come on
 * stdin: a 4-byte little-endian length (at most MAX_FRAME), then that many
 * bytes of NUL-terminated fields:
 *   spawn ID FLAGS CWD [N ENV...] PROGRAM ARG...   start PROGRAM (a path:
 *       no PATH search) with ARGs in CWD, in a session of its own, with
 *       default signal dispositions and an empty mask. stdin is always a
 *       pipe; FLAGS letters ('-': none):
 *         'o' stdout is a pipe, 'e' stderr is a pipe (each /dev/null
 *             otherwise);
 *         'm' stderr is the stdout pipe (or /dev/null with it): one pipe,
 *             the bytes in write order;
 *         'r' fd 3 is a pipe whose bytes (a status report, at most 63 of
 *             them) come back with the exit;
 *         'v' the field after CWD is a count N and the next N fields
 *             (`NAME=VALUE`) are the process's whole environment; without
 *             'v' it gets the spawner's own;
 *         'a' the first ARG is argv[0] (PROGRAM is only the file run);
 *             without 'a' argv[0] is PROGRAM.
 *       A PROGRAM that execve refuses with ENOEXEC (a script without `#!`)
 *       runs as `/bin/sh PROGRAM ARG...` (argv[0] dropped), as execvp does.
 *   release ID   the router has opened the pipe ends: close ours.
 * Events go to stdout, one line each:
 *   started ID PID IN OUT ERR   the router opens /proc/<spawner>/fd/<N> for
 *       each pipe end it needs (-1: none), then sends `release ID`.
 *   failed ID ERRNO             it could not start (fork, cwd or exec failed,
 *       or a malformed request); nothing runs.
 *   exit ID code N|signal N REPORT   the process ended (REPORT: the bytes
 *       written to fd 3, in hex; empty when none).
 * On end of stdin (the router is gone) it exits at once; processes it
 * started keep running (the router's own children would too).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define MAX_FRAME (4 << 20) /* above Linux's default ARG_MAX (2 MiB): argv and env fit */
#define MAX_ID 64
#define LOW_FDS 10 /* pipe ends live above this, clear of the child's 0-3 */

struct job {
  char id[MAX_ID + 1];
  pid_t pid;
  int ends[3]; /* our ends of stdin, stdout, stderr: kept until `release` */
  int report;  /* read end of fd 3, or -1 */
  int exited;
  struct job *next;
};

static struct job *jobs;

static void emit(const char *line) {
  size_t len = strlen(line), off = 0;
  while (off < len) {
    ssize_t n = write(STDOUT_FILENO, line + off, len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) exit(1); /* the router stopped listening */
    off += (size_t)n;
  }
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* fd moved above LOW_FDS (close-on-exec), so a dup2 to 0-3 never hits one of ours. */
static int high(int fd) {
  if (fd < 0 || fd >= LOW_FDS) return fd;
  int h = fcntl(fd, F_DUPFD_CLOEXEC, LOW_FDS);
  close(fd);
  return h;
}

/* A pipe with both ends high and close-on-exec; -1 on failure. */
static int make_pipe(int p[2]) {
  if (pipe2(p, O_CLOEXEC) < 0) return -1;
  p[0] = high(p[0]);
  p[1] = high(p[1]);
  if (p[0] < 0 || p[1] < 0) {
    close_fd(&p[0]);
    close_fd(&p[1]);
    return -1;
  }
  return 0;
}

static void drop(struct job *j) {
  for (struct job **p = &jobs; *p; p = &(*p)->next) {
    if (*p == j) {
      *p = j->next;
      break;
    }
  }
  for (int i = 0; i < 3; i++) close_fd(&j->ends[i]);
  close_fd(&j->report);
  free(j);
}

static struct job *find(const char *id) {
  for (struct job *j = jobs; j; j = j->next) {
    if (strcmp(j->id, id) == 0) return j;
  }
  return NULL;
}

/* Set by a vfork child (it shares our memory) when it could not exec. */
static volatile int child_errno;

/* In the vfork child: only system calls, then exec or _exit. */
static __attribute__((noreturn)) void child(int in, int out, int err, int rep, const char *cwd,
                                            const char *file, char **argv, char **shargv,
                                            char **envp) {
  sigset_t none;
  sigemptyset(&none);
  struct sigaction dfl = {.sa_handler = SIG_DFL};
  sigaction(SIGPIPE, &dfl, NULL); /* the only signal we do not leave at its default */
  sigprocmask(SIG_SETMASK, &none, NULL);
  int null = -1;
  if (out < 0 || err < 0) null = open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (setsid() < 0 || chdir(cwd) < 0 || dup2(in, 0) < 0 || dup2(out >= 0 ? out : null, 1) < 0 ||
      dup2(err >= 0 ? err : null, 2) < 0 || (rep >= 0 && dup2(rep, 3) < 0)) {
    child_errno = errno;
    _exit(127);
  }
  execve(file, argv, envp);
  if (errno == ENOEXEC) execve(shargv[0], shargv, envp); /* no `#!`: the shell runs it */
  child_errno = errno;
  _exit(127);
}

/* vfork in a frame of its own: nothing of the caller's can be clobbered. */
static __attribute__((noinline)) pid_t start_child(int in, int out, int err, int rep,
                                                   const char *cwd, const char *file, char **argv,
                                                   char **shargv, char **envp) {
  pid_t pid = vfork();
  if (pid == 0) child(in, out, err, rep, cwd, file, argv, shargv, envp);
  return pid;
}

/*
 * vfork, not posix_spawn: glibc's posix_spawn leaves its two internal signals
 * (32, 33) ignored in the child, and every process below (the runtime, the
 * exec wrapper, the command) would inherit that.
 */
static int spawn_job(struct job *j, const char *flags, const char *cwd, const char *file,
                     char **argv, char **shargv, char **envp) {
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, rep[2] = {-1, -1};
  int fail = 0;
  if (make_pipe(in) < 0) fail = errno;
  if (!fail && strchr(flags, 'o') && make_pipe(out) < 0) fail = errno;
  if (!fail && strchr(flags, 'e') && make_pipe(err) < 0) fail = errno;
  if (!fail && strchr(flags, 'r') && make_pipe(rep) < 0) fail = errno;
  if (!fail) {
    child_errno = 0;
    /* 'm': fd 2 gets the stdout pipe's write end too (or /dev/null, as fd 1). */
    int err_w = strchr(flags, 'm') ? out[1] : err[1];
    pid_t pid = start_child(in[0], out[1], err_w, rep[1], cwd, file, argv, shargv, envp);
    if (pid < 0) {
      fail = errno;
    } else if (child_errno != 0) {
      fail = child_errno;
      waitpid(pid, NULL, 0);
    } else {
      j->pid = pid;
    }
  }
  /* The child's ends are the child's now. */
  close_fd(&in[0]);
  close_fd(&out[1]);
  close_fd(&err[1]);
  close_fd(&rep[1]);
  j->ends[0] = in[1];
  j->ends[1] = out[0];
  j->ends[2] = err[0];
  j->report = rep[0];
  if (j->report >= 0) fcntl(j->report, F_SETFL, O_NONBLOCK);
  return fail;
}

/* Answers a request that starts nothing (an id longer than ids are is cut: it matches none). */
static void reject(const char *id, int err) {
  char line[128];
  snprintf(line, sizeof line, "failed %.64s %d\n", id, err);
  emit(line);
}

/* A NULL-terminated copy of f[from..to), after `lead` when not NULL. */
static char **vec(char **f, size_t from, size_t to, char *lead) {
  size_t k = lead ? 1 : 0;
  char **v = malloc((to - from + k + 1) * sizeof *v);
  if (!v) exit(1);
  if (lead) v[0] = lead;
  memcpy(v + k, f + from, (to - from) * sizeof *v);
  v[to - from + k] = NULL;
  return v;
}

/* A request, as its `n` fields. */
static void handle_fields(char **f, size_t n) {
  if (n == 2 && strcmp(f[0], "release") == 0) {
    struct job *j = find(f[1]);
    if (!j) return;
    for (int i = 0; i < 3; i++) close_fd(&j->ends[i]);
    if (j->exited) drop(j);
    return;
  }
  if (n < 5 || strcmp(f[0], "spawn") != 0 || strlen(f[1]) > MAX_ID || find(f[1])) {
    return reject(n > 1 ? f[1] : "-", EINVAL);
  }
  const char *flags = f[2], *cwd = f[3];
  size_t prog = 4; /* the index of PROGRAM */
  char **envp = environ;
  if (strchr(flags, 'v')) {
    char *end;
    errno = 0;
    unsigned long ne = strtoul(f[4], &end, 10);
    if (n < 6 || errno || end == f[4] || *end || ne > n - 6) return reject(f[1], EINVAL);
    prog = 5 + ne;
    envp = vec(f, 5, prog, NULL);
  }
  /* 'a': PROGRAM, then argv[0] ARG...; the shell fallback gets /bin/sh PROGRAM ARG... */
  int own0 = strchr(flags, 'a') != NULL;
  if (own0 && n < prog + 2) return reject(f[1], EINVAL);
  char **argv = vec(f, prog + own0, n, NULL);
  char **shargv = vec(f, prog + own0, n, "/bin/sh");
  shargv[1] = f[prog];
  struct job *j = calloc(1, sizeof *j);
  if (!j) exit(1);
  strcpy(j->id, f[1]);
  int fail = spawn_job(j, flags, cwd, f[prog], argv, shargv, envp);
  if (envp != environ) free(envp);
  free(argv);
  free(shargv);
  char line[160];
  if (fail) {
    snprintf(line, sizeof line, "failed %s %d\n", j->id, fail);
    emit(line);
    for (int i = 0; i < 3; i++) close_fd(&j->ends[i]);
    close_fd(&j->report);
    free(j);
    return;
  }
  j->next = jobs;
  jobs = j;
  snprintf(line, sizeof line, "started %s %d %d %d %d\n", j->id, (int)j->pid, j->ends[0],
           j->ends[1], j->ends[2]);
  emit(line);
}

/* One request frame: fields separated by NULs (the last one NUL-terminated too). */
static void handle(char *buf, size_t len) {
  size_t nf = 0;
  for (size_t i = 0; i < len; i++) nf += buf[i] == '\0';
  char **f = malloc((nf + 1) * sizeof *f);
  if (!f) exit(1);
  size_t n = 0;
  for (size_t i = 0; i < len; n++) {
    f[n] = buf + i;
    char *nul = memchr(buf + i, '\0', len - i);
    if (!nul) {
      reject(n > 1 ? f[1] : "-", EINVAL);
      return free(f);
    }
    i = (size_t)(nul - buf) + 1;
  }
  handle_fields(f, n);
  free(f);
}

static void reap(void) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    struct job *j = jobs;
    while (j && j->pid != pid) j = j->next;
    if (!j) continue;
    char report[2 * 63 + 1] = ""; /* hex */
    if (j->report >= 0) {
      unsigned char raw[63];
      ssize_t r = read(j->report, raw, sizeof raw);
      for (ssize_t i = 0; i < r; i++) snprintf(report + 2 * i, 3, "%02x", raw[i]);
      close_fd(&j->report);
    }
    char line[320];
    if (WIFSIGNALED(status)) {
      snprintf(line, sizeof line, "exit %s signal %d %s\n", j->id, WTERMSIG(status), report);
    } else {
      snprintf(line, sizeof line, "exit %s code %d %s\n", j->id, WEXITSTATUS(status), report);
    }
    emit(line);
    j->exited = 1;
    if (j->ends[0] < 0 && j->ends[1] < 0 && j->ends[2] < 0) drop(j);
  }
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) {
    perror("taskrouter-spawner: signalfd");
    return 1;
  }
  size_t cap = 64 * 1024, have = 0;
  char *buf = malloc(cap);
  if (!buf) return 1;
  struct pollfd p[2] = {{.fd = STDIN_FILENO, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
  for (;;) {
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (p[1].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) > 0) {
      }
      reap();
    }
    if (!p[0].revents) continue;
    if (have == cap) {
      /* Grows to hold one whole frame (a frame longer than MAX_FRAME ends the spawner). */
      if (cap >= MAX_FRAME + 4) return 1;
      cap *= 2;
      char *nb = realloc(buf, cap);
      if (!nb) return 1;
      buf = nb;
    }
    ssize_t r = read(STDIN_FILENO, buf + have, cap - have);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return 0; /* the router is gone */
    have += (size_t)r;
    size_t off = 0;
    while (have - off >= 4) {
      uint32_t len;
      memcpy(&len, buf + off, 4);
      if (len > MAX_FRAME) return 1;
      if (have - off - 4 < len) break;
      handle(buf + off + 4, len);
      off += 4 + len;
    }
    memmove(buf, buf + off, have - off);
    have -= off;
  }
}
