/*
 * taskrouter-agent: the per-task exec agent. One per task; it starts every
 * exec of the task, owns the exec's pipes, copies output into log files,
 * feeds stdin from a file, reaps, and keeps each exec's state. It outlives
 * the router: a router killed and restarted reconnects and finds every exec.
 * Single-threaded, epoll-based (one registration per fd, changed only when its
 * interest does: a turn costs O(ready fds), not O(live execs)), linked
 * statically, no allocation per byte.
 * (Protocol v1, plus the exec flag `r` and the `seen` request (an older
 * agent answers both with bad-request; the router ignores that answer to
 * `seen`); its client is src/runtime/agent/.)
 *
 * Start: `taskrouter-agent [-d] [-p]`, fd 3 (O_RDONLY|O_DIRECTORY) the exec
 * directory EXECDIR (router side only). Every file is EXECDIR/KEY.SUFFIX,
 * KEY ^[0-9a-z]{1,64}$, opened with openat2(RESOLVE_BENEATH|NO_SYMLINKS|
 * NO_MAGICLINKS|NO_XDEV). At start: fd 3 close-on-exec, non-dumpable, SIGPIPE
 * ignored and every other signal default, SIGCHLD blocked into a signalfd;
 * opens EXECDIR/exits (O_APPEND, created 0600 when absent), binds
 * EXECDIR/agent.sock (unix stream; unlinked first), writes `ready\n` on
 * stdout, then points stdin/stdout/stderr at /dev/null and serves.
 *   -d  keeps CAP_SYS_PTRACE; drops it (bounding set + capset) in every child
 *       whose request lacks `d`. Without -d capabilities are never touched.
 *   -p  setpgid(0, 0): the agent leads a process group of its own.
 * Started from outside its pid namespace (`runc exec` into a task: getppid()
 * is 0), it first forks once and the first process exits: the agent's parent
 * becomes the task's init, which reaps it the moment it exits. Reaped by the
 * machine's init instead, its exit would hold the task's pid namespace (and
 * so the container's dying init) until that init got to it: seconds on some
 * VMs' inits.
 * It exits on `quit` or when killed, never because the router disconnected.
 *
 * Connections: the newest accepted one is the router (the previous one is
 * closed). Events go to it only; none are kept while none is connected. When
 * its socket is full, at most one `out`/`err`/`inpos` per (KEY, kind) waits
 * (the newest value) and other events queue in order (over 16 MiB queued: the
 * connection is closed).
 *
 * Requests: a 4-byte little-endian length L (1..4 MiB), then L bytes of
 * NUL-terminated fields. A bad length or an unterminated last field closes
 * the connection.
 *   exec KEY FLAGS CAP GRACE DEADLINE ROWS COLS CWD NENV ENV... ARGV...
 *       FLAGS (`-`: none): o stdout -> KEY.out, e stderr -> KEY.err (each
 *       /dev/null otherwise), m stderr into the stdout pipe (wins over e),
 *       t a new pty of ROWS x COLS (master output -> KEY.out with o, else
 *       discarded; stdin -> master; e/m ignored), d keep CAP_SYS_PTRACE
 *       (refused without -d: `error KEY no-debug`), i KEY.in is a ring (see
 *       "Stdin ring"), r retention: CAP is not a cap but RETAIN, see below.
 *       CAP bytes kept over both files (0 none; at the cap the output is no
 *       longer read).
 *       With r (a task's entrypoint: a long-running process that must never
 *       block on its output) nothing is capped: each stream keeps (at least)
 *       its newest RETAIN bytes (RETAIN >= 1) and the agent frees the older
 *       ones with fallocate(PUNCH_HOLE) once RETAIN + RETAIN/4 (at least
 *       4 KiB more) are held: KEPT (the offset of the oldest byte kept,
 *       4 KiB-aligned) becomes LEN - RETAIN rounded down. Before punching
 *       it writes KEY.kept (0600, replaced whole: written to KEY.kept.new, then
 *       renamed over it): `%020 OUTKEPT %020
 *       ERRKEPT\n` (42 bytes), so a reader that reads KEY.kept AFTER reading
 *       bytes of KEY.out/KEY.err knows which of them may have been holes.
 *       Offsets in events stay absolute (files keep their size; a file
 *       system without hole punching keeps the bytes, KEPT moves anyway). GRACE ms:
 *       after the leader exited a pipe still open is cut once no byte came
 *       for GRACE (re-armed at most 10 times; at the cap after one GRACE).
 *       DEADLINE: CLOCK_REALTIME ms when the group is SIGKILLed (0 none).
 *       CWD absolute. NENV `NAME=VALUE` fields are the whole environment.
 *       ARGV[0] is searched in the environment's PATH (execvp rules, ENOEXEC
 *       runs /bin/sh). The KEY.out/KEY.err the flags name are opened at
 *       the stream's first byte, created (0600) when absent (a stream with
 *       no byte has no file); KEY.in is opened at the first `in`/`eof` past
 *       offset 0 (the router writes it first). A file that cannot be
 *       opened or written ends its stream where it stands.
 *       The child: setsid, default signals, empty mask, fds 0-2 only.
 *       Reply `started KEY PID`; a command that cannot start (or a CWD that
 *       cannot be entered) still starts: `taskrouter: NAME: command not
 *       found` (127) / `...: Permission denied` (126) / `taskrouter: cd CWD:
 *       ERR` (126) is written to KEY.err (KEY.out with m or t), then `exit`,
 *       the stream ends and `inend KEY 0`. Otherwise `error KEY TEXT` and no
 *       state is kept: TEXT is bad-request, exists, no-debug, pipe ERRNO, pty ERRNO, timer ERRNO, spawn ERRNO, caps ERRNO
 *       (KEY `-` and TEXT bad-key for a KEY that is not one).
 *   in KEY LEN       LEN stdin bytes were written into KEY.in (a ring: byte L
 *                    at L mod 64 MiB, and LEN is taken only up to position +
 *                    64 MiB): copy [position, LEN) to stdin.
 *   eof KEY LEN      stdin ends at LEN (pipe closed; a pty is left open).
 *   kill KEY SIG     kill(-PID, SIG), SIG 0..64; ignored once reaped.
 *   resize KEY ROWS COLS   TIOCSWINSZ on a `t` exec's terminal.
 *   list             a `state` line per exec, then `listed`.
 *   forget KEY       drops an exec that was reaped and whose streams ended, and
 *                    removes its files KEY.in, KEY.inlen, KEY.out, KEY.err, KEY.kept
 *                    (and a KEY.kept.new a crash left).
 *   quit             SIGKILLs every live group, reaps, exits 0.
 *   ping N           `pong N` after every earlier event.
 *   seen KEY STREAM OFF   drop KEY.STREAM below OFF from the page cache
 *                    (see "Memory" below).
 * Requests naming an unknown KEY (in, eof, kill, resize, forget) are ignored;
 * malformed ones answer `error KEY bad-request`.
 * Events (lines): started KEY PID | error KEY TEXT | out KEY LEN |
 *   err KEY LEN | outend KEY LEN | errend KEY LEN | inpos KEY N |
 *   inend KEY N | exit KEY code N | exit KEY signal N |
 *   state KEY PID RUN OUTLEN OUTEND ERRLEN ERREND INPOS INEND RING | listed |
 *   pong N. `out`/`err`/`inpos` are coalesced; the last length comes before
 *   its `outend`/`errend`; a stream not requested ends (LEN 0) at the exit;
 *   `inend` also comes as soon as no process holds the stdin pipe's read end.
 *   At the exit, before the event, the agent appends one line to EXECDIR/exits:
 *   `KEY code N MS\n` / `KEY signal N MS\n` (MS: CLOCK_REALTIME ms; a torn
 *   last line is to be ignored). Once lines of forgotten execs are over 3/4
 *   of at least 1024, it is rewritten (exits.new renamed over it).
 *
 * Stdin ring (flag i): KEY.in is a ring of 64 MiB: stdin byte L is at
 * L mod 64 MiB. The router never writes over bytes the command has not taken
 * (its `inpos`) and keeps the count of bytes written in KEY.inlen (the agent
 * never reads it; `forget` removes it with the other files). Nothing of a ring
 * is punched: its pages stay in the page cache and are reused (the router
 * hands a ring the command no longer reads to the task's next exec). RING in
 * `state` is 1 for such an exec. (An older agent answers flag i with
 * bad-request; built with -DTASKROUTER_AGENT_WITHOUT_RING, this one does too:
 * test/agent-fallback.test.ts checks the router's linear fallback with it.)
 *
 * Memory: files hold every byte; the page cache need not. `seen KEY STREAM
 * OFF` (STREAM `out` or `err`: a reader of the router delivered every byte
 * below OFF) calls posix_fadvise(DONTNEED) on KEY.STREAM from OFF - 64 MiB
 * to OFF (4 KiB-aligned; the router sends one per 16 MiB step, so each range
 * is covered four times: pages still dirty or under writeback at one call
 * are dropped at a later one). It starts their writeback and drops them once
 * clean, so a stream read as it is written keeps recycling the same memory;
 * a later reader of those bytes reads them from disk. Stateless: no answer,
 * an absent file is ignored. Bytes of a linear KEY.in (no flag i) the command
 * has taken are never read again: each time the position crosses a 16 MiB
 * step, KEY.in below it is freed with fallocate(PUNCH_HOLE) (4 KiB-aligned;
 * its size stays: the router counts the bytes written by it), so its stdin is
 * never written back. A ring is never punched (see "Stdin ring").
 * Growing the page cache by every byte moved cost this machine's VMs ~3 s
 * of CPU per GiB once it reached memory not touched before
 * (docs/DECISIONS.md, "Page cache of the agent's files"). Stdin is
 * copied into the command's pipe (pread + write), never spliced: a spliced
 * page stays the page cache's own wherever the command moves it on
 * (splice, tee, a socket), and a punch zeroes its part of a large folio in
 * place.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/falloc.h>
#include <linux/openat2.h>
#include <sys/epoll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define DIR_FD 3
#define SOCK_NAME "agent.sock"
#define MAX_FRAME (4u << 20)
#define MAX_KEY 64
#define OUT_PIPE_SIZE (1 << 20)
#define TURN_BYTES ((uint64_t)1 << 20) /* per exec and stream, per loop turn */
#define MAX_QUEUE ((size_t)16 << 20)
#define MAX_REARMS 10
#define SHED_STEP ((uint64_t)16 << 20) /* see "Memory" above */
#define SHED_BACK ((uint64_t)64 << 20)
#define RING_SIZE ((uint64_t)64 << 20) /* see "Stdin ring"; src/runtime/agent/stdin-ring.ts has it too */
#define HASH_SIZE 4096
#define KEPT_ALIGN ((uint64_t)4096)
#define KEPT_LINE 42
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

enum { D_OUT = 1, D_ERR = 2, D_INPOS = 4 };

struct stream {
  int fd;       /* pipe read end or pty master (pty: shared with stdin), -1 when closed */
  int file;     /* KEY.out / KEY.err, -1 when closed or not requested */
  int wanted;   /* the flags asked for the file */
  int ended;    /* the end event was sent */
  int nosplice; /* the file refused splice: read + pwrite */
  uint64_t len;
  uint64_t kept; /* with a retention: offset of the oldest byte kept (older ones are freed) */
  int64_t last; /* CLOCK_MONOTONIC ms of the last byte (or the leader's exit) */
};

struct exec {
  char key[MAX_KEY + 1];
  pid_t pid;
  int pty;
  int master;
  uint64_t cap, grace;
  uint64_t retain; /* flag r: bytes kept per stream (0: no retention) */
  int reaped, signaled, status;
  struct stream s[2]; /* stdout, stderr */
  int in_fd, in_file, in_ended, in_eof;
  uint64_t in_pos, in_want;
  uint64_t in_freed; /* KEY.in below this was punched (see "Memory") */
  int in_ring;       /* KEY.in is a ring (flag i, see "Stdin ring") */
  int dl_fd, grace_fd, rearms;
  int64_t exited_at; /* CLOCK_REALTIME ms of the reap (the `exits` line) */
  unsigned dirty;
  int on_dirty, forgotten;
  struct exec *next, *prev, *hnext, *dnext;
  struct exec *anext; /* on `active` */
  struct reg {
    struct exec *e;
    int type;
    int fd;        /* the fd registered, -1 none (closing an fd drops its registration) */
    uint32_t mask; /* its interest */
  } reg[5]; /* R_OUT (a pty's master: output and stdin), R_ERR, R_IN (a pipe), R_DL, R_GRACE */
};

static struct exec *first, *last_exec, *dirty_list;
/* Execs not yet reaped or with an fd open: the only ones the loop and the reaper look at
   (retained execs cost nothing per turn). Pruned by the loop. */
static struct exec *active;
static struct exec *table[HASH_SIZE];
static int debug_caps, devnull = -1, listener = -1, conn = -1;
static struct rlimit orig_nofile;
static char iobuf[64 * 1024];

/* ---- small helpers ---- */

static int64_t now_ms(clockid_t clk) {
  struct timespec ts;
  clock_gettime(clk, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static int valid_key(const char *k) {
  size_t n = 0;
  for (; k[n]; n++) {
    if (!((k[n] >= '0' && k[n] <= '9') || (k[n] >= 'a' && k[n] <= 'z'))) return 0;
  }
  return n >= 1 && n <= MAX_KEY;
}

/* A decimal number (digits only, no sign, no overflow). */
static int parse_u64(const char *s, uint64_t *out) {
  uint64_t v = 0;
  if (!*s) return -1;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -1;
    unsigned d = (unsigned)(*s - '0');
    if (v > (UINT64_MAX - d) / 10) return -1;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

static unsigned hash_key(const char *k) {
  unsigned h = 5381;
  while (*k) h = h * 33 + (unsigned char)*k++;
  return h % HASH_SIZE;
}

static struct exec *find(const char *key) {
  for (struct exec *e = table[hash_key(key)]; e; e = e->hnext) {
    if (strcmp(e->key, key) == 0) return e;
  }
  return NULL;
}

/* A live (not forgotten) exec, for the requests about one. */
static struct exec *find_live(const char *key) {
  struct exec *e = valid_key(key) ? find(key) : NULL;
  return e && !e->forgotten ? e : NULL;
}

/* EXECDIR/name, never through a symlink, a magic link or another mount. */
static int open_beneath(const char *name, int flags, mode_t mode) {
  struct open_how how = {
      .flags = (uint64_t)(flags | O_CLOEXEC),
      .mode = (flags & O_CREAT) ? mode : 0,
      .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
  };
  long fd;
  do {
    fd = syscall(SYS_openat2, DIR_FD, name, &how, sizeof how);
  } while (fd < 0 && errno == EINTR);
  /* A seccomp filter without openat2: NAME has no `/`, so O_NOFOLLOW is the same check. */
  if (fd < 0 && errno == ENOSYS) fd = openat(DIR_FD, name, flags | O_CLOEXEC | O_NOFOLLOW, mode);
  return (int)fd;
}

static int open_key(const char *key, const char *suffix, int flags, mode_t mode) {
  char name[MAX_KEY + 16];
  snprintf(name, sizeof name, "%s.%s", key, suffix);
  return open_beneath(name, flags, mode);
}

static int pwrite_all(int fd, const char *p, size_t n, uint64_t off) {
  while (n > 0) {
    ssize_t w = pwrite(fd, p, n, (off_t)off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
    off += (uint64_t)w;
  }
  return 0;
}

/* ---- events ---- */

static char *q;
static size_t q_len, q_off, q_cap;
static unsigned char *ib; /* request bytes */
static size_t ib_len, ib_cap;
static unsigned conn_gen; /* bumped when the connection goes */

static void drop_conn(void) {
  close_fd(&conn);
  q_len = q_off = 0;
  ib_len = 0;
  conn_gen++;
  for (struct exec *e = dirty_list; e; e = e->dnext) {
    e->dirty = 0;
    e->on_dirty = 0;
  }
  dirty_list = NULL;
}

static void put(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void put(const char *fmt, ...) {
  if (conn < 0) return;
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof line) n = sizeof line - 1;
  if (q_off > 0 && q_off == q_len) q_off = q_len = 0;
  if (q_len + (size_t)n > q_cap) {
    if (q_off > 0) {
      memmove(q, q + q_off, q_len - q_off);
      q_len -= q_off;
      q_off = 0;
    }
    if (q_len + (size_t)n > MAX_QUEUE) return drop_conn(); /* a router that reads nothing */
    if (q_len + (size_t)n > q_cap) {
      size_t cap = q_cap ? q_cap : 64 * 1024;
      while (cap < q_len + (size_t)n) cap *= 2;
      char *nq = realloc(q, cap);
      if (!nq) return drop_conn();
      q = nq;
      q_cap = cap;
    }
  }
  memcpy(q + q_len, line, (size_t)n);
  q_len += (size_t)n;
}

/* The coalesced events of e, now, in the queue. */
static void materialize(struct exec *e) {
  unsigned d = e->dirty;
  e->dirty = 0;
  if (d & D_OUT) put("out %s %llu\n", e->key, (unsigned long long)e->s[0].len);
  if (d & D_ERR) put("err %s %llu\n", e->key, (unsigned long long)e->s[1].len);
  if (d & D_INPOS) put("inpos %s %llu\n", e->key, (unsigned long long)e->in_pos);
}

static void materialize_all(void) {
  for (struct exec *e = dirty_list; e; e = e->dnext) {
    materialize(e);
    e->on_dirty = 0;
  }
  dirty_list = NULL;
}

static void mark(struct exec *e, unsigned bit) {
  if (conn < 0) return;
  e->dirty |= bit;
  if (!e->on_dirty) {
    e->on_dirty = 1;
    e->dnext = dirty_list;
    dirty_list = e;
  }
}

/* An event that keeps its place: e's pending coalesced ones go first. */
#define ordered(e, ...)  \
  do {                   \
    materialize(e);      \
    put(__VA_ARGS__);    \
  } while (0)

/* Sends the queue; once the socket took all of it, the coalesced values too (also
   those marked while ordered events were queued: none may wait for a later turn). */
static void flush(void) {
  while (conn >= 0) {
    if (q_off == q_len) {
      q_off = q_len = 0;
      materialize_all(); /* the socket took everything: send the latest values */
      if (q_len == 0) return;
    }
    while (q_off < q_len) {
      ssize_t n = send(conn, q + q_off, q_len - q_off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n <= 0) return drop_conn();
      q_off += (size_t)n;
    }
  }
}

/* ---- execs ---- */

/* KEY.out / KEY.err of stream i, created (0600) at its first byte: an exec without
   output creates no file (a creat costs 20 µs-1 ms of CPU on ext4). */
static int open_output(struct exec *e, int i) {
  if (e->s[i].file < 0) e->s[i].file = open_key(e->key, i ? "err" : "out", O_WRONLY | O_CREAT, 0600);
  return e->s[i].file;
}

static uint64_t room(const struct exec *e) {
  if (!e->cap) return UINT64_MAX;
  uint64_t used = e->s[0].len + e->s[1].len;
  return used >= e->cap ? 0 : e->cap - used;
}

/* Timers and the deadline go once the leader was reaped and both pipes are closed. */
static void maybe_done(struct exec *e) {
  if (e->reaped && e->s[0].fd < 0 && e->s[1].fd < 0) {
    close_fd(&e->dl_fd);
    close_fd(&e->grace_fd);
  }
}

static void end_stdin(struct exec *e) {
  if (e->in_ended) return;
  e->in_ended = 1;
  if (!e->pty) close_fd(&e->in_fd);
  e->in_fd = -1; /* a pty's master stays with stdout */
  close_fd(&e->in_file);
  ordered(e, "inend %s %llu\n", e->key, (unsigned long long)e->in_pos);
}

static void end_stream(struct exec *e, int i) {
  struct stream *s = &e->s[i];
  if (e->pty && i == 0 && s->fd >= 0) {
    end_stdin(e); /* nothing reads the terminal any more */
    close_fd(&e->master);
    s->fd = -1;
  }
  close_fd(&s->fd);
  close_fd(&s->file);
  if (!s->ended && s->wanted) { /* an unrequested stream ends at the leader's exit */
    s->ended = 1;
    ordered(e, "%s %s %llu\n", i ? "errend" : "outend", e->key, (unsigned long long)s->len);
  }
  maybe_done(e);
}

/* Retention (flag r): frees stream i's bytes older than its newest RETAIN once RETAIN/4
   (at least 4 KiB) more are held; KEY.kept is written first (see the header). */
static void trim(struct exec *e, int i) {
  struct stream *s = &e->s[i];
  uint64_t slack = e->retain / 4 > KEPT_ALIGN ? e->retain / 4 : KEPT_ALIGN;
  if (!e->retain || s->file < 0 || s->len - s->kept <= e->retain + slack) return;
  uint64_t kept = (s->len - e->retain) & ~(KEPT_ALIGN - 1);
  if (kept <= s->kept) return;
  uint64_t old = s->kept;
  s->kept = kept;
  char line[KEPT_LINE + 1];
  snprintf(line, sizeof line, "%020llu %020llu\n", (unsigned long long)e->s[0].kept,
           (unsigned long long)e->s[1].kept);
  /* Written whole to KEY.kept.new, then renamed over KEY.kept: a reader's one read of an
     open KEY.kept sees one whole line, never one torn by a rewrite in place. */
  char tmp[MAX_KEY + 16], name[MAX_KEY + 16];
  snprintf(tmp, sizeof tmp, "%s.kept.new", e->key);
  snprintf(name, sizeof name, "%s.kept", e->key);
  int fd = open_beneath(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  int ok = fd >= 0 && pwrite_all(fd, line, KEPT_LINE, 0) == 0;
  if (fd >= 0) close(fd);
  if (ok) ok = renameat(DIR_FD, tmp, DIR_FD, name) == 0;
  if (!ok) unlinkat(DIR_FD, tmp, 0);
  /* Never a hole a reader cannot learn of: without KEY.kept nothing is freed. */
  if (ok) fallocate(s->file, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)old, (off_t)(kept - old));
}

/* Copies what stream i has (at most TURN_BYTES, at most to the cap) into its file. Retention
   (`trim`: a new KEY.kept, ~0.2 ms on ext4) runs once per turn, before the stream can end. */
static void pump(struct exec *e, int i) {
  struct stream *s = &e->s[i];
  uint64_t moved = 0;
  int grew = 0;
  while (s->fd >= 0 && moved < TURN_BYTES) {
    uint64_t left = s->wanted ? room(e) : UINT64_MAX; /* discarded bytes are not kept */
    if (left == 0) break;
    size_t want = (size_t)(left < TURN_BYTES - moved ? left : TURN_BYTES - moved);
    ssize_t n;
    /* The file is created with the first byte (read, not spliced: nothing to create at EOF). */
    if (s->file < 0 || e->pty || s->nosplice) {
      if (want > sizeof iobuf) want = sizeof iobuf;
      n = read(s->fd, iobuf, want);
      if (n > 0 && s->wanted &&
          (open_output(e, i) < 0 || pwrite_all(s->file, iobuf, (size_t)n, s->len) < 0)) {
        if (grew) trim(e, i);
        return end_stream(e, i); /* the file takes no more (ENOSPC, EIO, EMFILE...) */
      }
    } else {
      loff_t off = (loff_t)s->len;
      n = splice(s->fd, NULL, s->file, &off, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n < 0 && (errno == EINVAL || errno == ENOSYS)) {
        s->nosplice = 1;
        continue;
      }
    }
    if (n > 0) {
      moved += (uint64_t)n;
      s->last = now_ms(CLOCK_MONOTONIC);
      if (s->wanted) {
        s->len += (uint64_t)n;
        mark(e, i ? D_ERR : D_OUT);
        grew = 1;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (grew) trim(e, i);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    return end_stream(e, i); /* EOF, EIO (a pty without slave) or a file error */
  }
  if (grew) trim(e, i);
}

/* Copies stdin bytes [in_pos, in_want) of KEY.in (at L mod RING_SIZE for a ring) into stdin (at most TURN_BYTES). By copy, never by
   splice: spliced bytes would be the page cache's own pages, held by the pipe and by
   wherever the command splices them on (a pipe, a socket), and freeing KEY.in (below)
   zeroes its part of a large folio in place. Copied, they are the pipe's own. */
static void feed(struct exec *e) {
  uint64_t moved = 0;
  while (e->in_fd >= 0 && e->in_pos < e->in_want && moved < TURN_BYTES) {
    uint64_t left = e->in_want - e->in_pos, at = e->in_pos;
    if (e->in_ring) {
      at = e->in_pos % RING_SIZE;
      uint64_t to_end = RING_SIZE - at;
      if (left > to_end) left = to_end;
    }
    size_t want = (size_t)(left < sizeof iobuf ? left : sizeof iobuf);
    ssize_t r = pread(e->in_file, iobuf, want, (off_t)at);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      e->in_want = e->in_pos; /* KEY.in is shorter than said: wait for the next `in` */
      break;
    }
    ssize_t n = write(e->in_fd, iobuf, (size_t)r);
    if (n > 0) {
      e->in_pos += (uint64_t)n;
      moved += (uint64_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (moved) mark(e, D_INPOS);
    return end_stdin(e); /* EPIPE: the command closed its stdin (EIO: the terminal is gone) */
  }
  if (moved) mark(e, D_INPOS);
  /* KEY.in the command has taken is never read again: free it (see "Memory"). */
  if (e->in_file >= 0 && !e->in_ring && e->in_pos - e->in_freed >= SHED_STEP) {
    uint64_t to = e->in_pos & ~(KEPT_ALIGN - 1);
    fallocate(e->in_file, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)e->in_freed,
              (off_t)(to - e->in_freed));
    e->in_freed = to; /* also when it failed (a read-only KEY.in): nothing to retry */
  }
  if (e->in_eof && e->in_pos >= e->in_want) end_stdin(e);
}

static int arm(int fd, int flags, int64_t ms_or_at) {
  struct itimerspec it = {{0, 0}, {0, 0}};
  if (ms_or_at <= 0) {
    it.it_value.tv_nsec = 1; /* now (0 would disarm) */
  } else {
    it.it_value.tv_sec = ms_or_at / 1000;
    it.it_value.tv_nsec = (ms_or_at % 1000) * 1000000;
  }
  return timerfd_settime(fd, flags, &it, NULL);
}

/* Cuts stream i after taking what it holds now (within the cap). */
static void cut(struct exec *e, int i) {
  pump(e, i);
  if (e->s[i].fd >= 0) end_stream(e, i);
}

static void grace_fired(struct exec *e) {
  uint64_t ticks;
  if (read(e->grace_fd, &ticks, sizeof ticks) < 0) return;
  int64_t now = now_ms(CLOCK_MONOTONIC), next = INT64_MAX;
  for (int i = 0; i < 2; i++) {
    struct stream *s = &e->s[i];
    if (s->fd < 0) continue;
    int capped = s->wanted && room(e) == 0;
    if (capped || now - s->last >= (int64_t)e->grace || e->rearms >= MAX_REARMS) {
      cut(e, i);
    } else if (s->last + (int64_t)e->grace < next) {
      next = s->last + (int64_t)e->grace;
    }
  }
  if (e->grace_fd >= 0 && (e->s[0].fd >= 0 || e->s[1].fd >= 0)) {
    e->rearms++;
    arm(e->grace_fd, 0, next - now);
  }
}

static void arm_grace(struct exec *e) {
  if (e->grace_fd < 0) e->grace_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  if (e->grace_fd < 0 || arm(e->grace_fd, 0, (int64_t)e->grace) < 0) {
    for (int i = 0; i < 2; i++) {
      if (e->s[i].fd >= 0) cut(e, i); /* no timer: no grace */
    }
  }
}

/* `exits`: one line per exit, appended in one write (a torn last line is ignored). */
static int exits_fd = -1;
static uint64_t exit_lines, exits_kept; /* lines in `exits`; execs reaped and not forgotten */

static int exit_line(char *line, size_t cap, const struct exec *e, int64_t at) {
  return snprintf(line, cap, "%s %s %d %lld\n", e->key, e->signaled ? "signal" : "code", e->status,
                  (long long)at);
}

static void write_exit_file(struct exec *e) {
  char line[MAX_KEY + 64];
  e->exited_at = now_ms(CLOCK_REALTIME);
  int n = exit_line(line, sizeof line, e, e->exited_at);
  exits_kept++;
  if (exits_fd >= 0 && write(exits_fd, line, (size_t)n) == n) exit_lines++;
}

/* Rewrites `exits` with the lines of the execs not forgotten, once forgotten ones
   are most of it (exits.new, then renamed over it: a crash leaves one or the other). */
static void compact_exits(void) {
  if (exit_lines < 1024 || exit_lines < 4 * exits_kept) return;
  int fd = open_beneath("exits.new", O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return;
  uint64_t off = 0, lines = 0;
  for (struct exec *e = first; e; e = e->next) {
    if (!e->reaped) continue;
    char line[MAX_KEY + 64];
    int n = exit_line(line, sizeof line, e, e->exited_at);
    if (pwrite_all(fd, line, (size_t)n, off) < 0) {
      close(fd);
      unlinkat(DIR_FD, "exits.new", 0);
      return;
    }
    off += (uint64_t)n;
    lines++;
  }
  int nfd = -1;
  if (renameat(DIR_FD, "exits.new", DIR_FD, "exits") == 0) {
    nfd = fd;
    fd = -1;
    lseek(nfd, 0, SEEK_END);
    if (fcntl(nfd, F_SETFL, O_APPEND) == 0) {
      close_fd(&exits_fd);
      exits_fd = nfd;
      exit_lines = lines;
      nfd = -1;
    }
  }
  close_fd(&fd);
  close_fd(&nfd);
}

/* The leader is reaped: `exit`, its `exits` line, the ends of unrequested streams, the grace. */
static void leader_exited(struct exec *e, int status) {
  e->reaped = 1;
  e->signaled = WIFSIGNALED(status);
  e->status = e->signaled ? WTERMSIG(status) : WEXITSTATUS(status);
  write_exit_file(e);
  ordered(e, "exit %s %s %d\n", e->key, e->signaled ? "signal" : "code", e->status);
  int64_t now = now_ms(CLOCK_MONOTONIC);
  int open = 0;
  for (int i = 0; i < 2; i++) {
    struct stream *s = &e->s[i];
    if (!s->wanted && !s->ended) {
      s->ended = 1;
      ordered(e, "%s %s 0\n", i ? "errend" : "outend", e->key);
    }
    if (s->fd >= 0) {
      if (s->last < now) s->last = now;
      open = 1;
    }
  }
  if (open) arm_grace(e);
  maybe_done(e);
}

static void update(struct exec *e);

/* Nothing more can happen to e: reaped, every fd closed. */
static int settled(const struct exec *e) {
  return e->reaped && e->s[0].fd < 0 && e->s[1].fd < 0 && e->in_fd < 0 && e->dl_fd < 0 &&
         e->grace_fd < 0;
}

/* Reaps every exited child; `active` loses the execs that settled on the way. */
static void reap(void) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    for (struct exec **pp = &active; *pp;) {
      struct exec *e = *pp;
      if (settled(e)) {
        *pp = e->anext;
        continue;
      }
      pp = &e->anext;
      if (e->pid == pid && !e->reaped) {
        leader_exited(e, status);
        update(e); /* the grace timer may be new */
        break;
      }
    }
  }
}

/* SIGKILLs e's group; after the reap only while a pipe is open (a descendant likely
   holds it) and no newer exec has the same pid (then the group id is not e's). */
static void kill_group(struct exec *e, int sig) {
  if (e->reaped) {
    if (e->s[0].fd < 0 && e->s[1].fd < 0) return;
    for (struct exec *o = first; o; o = o->next) {
      if (o != e && o->pid == e->pid && !o->reaped) return;
    }
  }
  kill(-e->pid, sig);
}

static void deadline_fired(struct exec *e) {
  close_fd(&e->dl_fd);
  kill_group(e, SIGKILL);
}

/* ---- starting a command ---- */

struct spawn_req {
  int in, out, err; /* what becomes fds 0, 1, 2 (pipe mode) */
  const char *slave; /* pty mode */
  const char *cwd;
  char **files; /* where ARGV[0] may be, in PATH order */
  char **argv, **shargv, **envp;
  int drop_ptrace;
};

enum { STAGE_NONE, STAGE_SETUP, STAGE_CAPS, STAGE_CD, STAGE_EXEC };
/* Set by the vfork child (it shares our memory) when it could not exec. */
static volatile int child_stage, child_errno;

static int drop_ptrace(void) {
  if (prctl(PR_CAPBSET_DROP, CAP_SYS_PTRACE, 0, 0, 0) < 0) return -1;
  struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
  if (syscall(SYS_capget, &h, d) < 0) return -1;
  uint32_t bit = 1u << (CAP_SYS_PTRACE & 31);
  int w = CAP_SYS_PTRACE >> 5;
  d[w].effective &= ~bit;
  d[w].permitted &= ~bit;
  d[w].inheritable &= ~bit;
  return syscall(SYS_capset, &h, d) < 0 ? -1 : 0;
}

static __attribute__((noreturn)) void child_fail(int stage) {
  child_errno = errno;
  child_stage = stage;
  _exit(127);
}

/* In the vfork child: only system calls on prepared data, then exec or _exit. */
static __attribute__((noreturn)) void child(const struct spawn_req *r) {
  struct sigaction dfl = {.sa_handler = SIG_DFL};
  for (int sig = 1; sig < NSIG; sig++) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, NULL);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  setrlimit(RLIMIT_NOFILE, &orig_nofile);
  if (setsid() < 0) child_fail(STAGE_SETUP);
  if (r->slave) {
    int t = open(r->slave, O_RDWR);
    if (t < 0 || ioctl(t, TIOCSCTTY, 0) < 0 || dup2(t, 0) < 0 || dup2(t, 1) < 0 ||
        dup2(t, 2) < 0) {
      child_fail(STAGE_SETUP);
    }
  } else if (dup2(r->in, 0) < 0 || dup2(r->out, 1) < 0 || dup2(r->err, 2) < 0) {
    child_fail(STAGE_SETUP);
  }
  if (r->drop_ptrace && drop_ptrace() < 0) child_fail(STAGE_CAPS);
  if (chdir(r->cwd) < 0) child_fail(STAGE_CD);
  close_range(3, ~0U, 0); /* everything of ours is close-on-exec too */
  int err = ENOENT, eacces = 0;
  for (char **f = r->files; *f; f++) {
    execve(*f, r->argv, r->envp);
    err = errno;
    if (err == ENOEXEC) { /* no `#!`: the shell runs it, as execvp does */
      r->shargv[1] = *f;
      execve(r->shargv[0], r->shargv, r->envp);
      err = errno;
    }
    if (err == EACCES) {
      eacces = 1;
    } else if (err != ENOENT && err != ESTALE && err != ENOTDIR && err != ENODEV &&
               err != ETIMEDOUT) {
      errno = err;
      child_fail(STAGE_EXEC);
    }
  }
  errno = eacces ? EACCES : err;
  child_fail(STAGE_EXEC);
}

/* vfork in a frame of its own: nothing of the caller's can be clobbered. */
static __attribute__((noinline)) pid_t start_child(const struct spawn_req *r) {
  pid_t pid = vfork();
  if (pid == 0) child(r);
  return pid;
}

/* The paths execvp would try for `name` with PATH `path` (NULL-terminated, malloc'd). */
static char **candidates(const char *name, const char *path) {
  size_t n = 1;
  if (!strchr(name, '/') && *name) {
    for (const char *p = path; *p; p++) n += *p == ':';
  } else {
    n = *name ? 1 : 0;
  }
  char **v = calloc(n + 1, sizeof *v);
  if (!v) exit(1);
  if (strchr(name, '/')) {
    v[0] = strdup(name);
    if (!v[0]) exit(1);
    return v;
  }
  if (!*name) return v;
  size_t i = 0, nl = strlen(name);
  for (const char *p = path;; p++) {
    const char *end = strchrnul(p, ':');
    size_t dl = (size_t)(end - p);
    char *c = malloc(dl + nl + 2);
    if (!c) exit(1);
    memcpy(c, p, dl);
    if (dl) c[dl++] = '/'; /* an empty element is the current directory */
    memcpy(c + dl, name, nl + 1);
    v[i++] = c;
    if (!*end) break;
    p = end;
  }
  return v;
}

static void free_vec(char **v) {
  if (!v) return;
  for (char **p = v; *p; p++) free(*p);
  free(v);
}

/* A pipe, both ends close-on-exec, ours (index `ours`) non-blocking. */
static int make_pipe(int p[2], int ours) {
  if (pipe2(p, O_CLOEXEC) < 0) return -1;
  fcntl(p[ours], F_SETFL, O_NONBLOCK);
  return 0;
}

static struct exec *new_exec(const char *key) {
  struct exec *e = calloc(1, sizeof *e);
  if (!e) exit(1);
  strcpy(e->key, key);
  e->master = e->in_fd = e->in_file = e->dl_fd = e->grace_fd = -1;
  for (int i = 0; i < 2; i++) e->s[i].fd = e->s[i].file = -1;
  for (int i = 0; i < (int)(sizeof e->reg / sizeof e->reg[0]); i++) {
    e->reg[i] = (struct reg){.e = e, .type = i, .fd = -1};
  }
  return e;
}

static void free_exec_fds(struct exec *e) {
  for (int i = 0; i < 2; i++) {
    if (e->s[i].fd != e->master) close_fd(&e->s[i].fd);
    e->s[i].fd = -1;
    close_fd(&e->s[i].file);
  }
  if (e->in_fd != e->master) close_fd(&e->in_fd);
  e->in_fd = -1;
  close_fd(&e->master);
  close_fd(&e->in_file);
  close_fd(&e->dl_fd);
  close_fd(&e->grace_fd);
}

static void keep(struct exec *e) {
  unsigned h = hash_key(e->key);
  e->hnext = table[h];
  table[h] = e;
  e->prev = last_exec;
  if (last_exec) last_exec->next = e;
  else first = e;
  last_exec = e;
  e->anext = active;
  active = e;
}


/* The command could not start: the shell's message, `exit`, the stream ends. */
static void not_started(struct exec *e, int stage, int err, const char *name, const char *cwd,
                        int to_out) {
  int code = stage == STAGE_EXEC && (err == ENOENT || err == ENOTDIR) ? 127 : 126;
  char *msg = NULL;
  int n;
  if (stage == STAGE_CD) {
    n = asprintf(&msg, "taskrouter: cd %s: %s\n", cwd, strerror(err));
  } else {
    n = asprintf(&msg, "taskrouter: %s: %s\n", name,
                 code == 127 ? "command not found" : "Permission denied");
  }
  int i = to_out ? 0 : 1; /* with m or t: KEY.out */
  struct stream *s = &e->s[i];
  if (n > 0 && s->wanted && open_output(e, i) >= 0) {
    uint64_t len = (uint64_t)n, left = room(e);
    if (len > left) len = left;
    if (len > 0 && pwrite_all(s->file, msg, (size_t)len, 0) == 0) {
      s->len = len;
      mark(e, i ? D_ERR : D_OUT);
    }
  }
  if (n > 0) free(msg);
  for (int k = 0; k < 2; k++) {
    if (e->s[k].fd != e->master) close_fd(&e->s[k].fd);
    e->s[k].fd = -1;
  }
  if (e->in_fd != e->master) close_fd(&e->in_fd);
  e->in_fd = -1;
  close_fd(&e->master);
  leader_exited(e, code << 8); /* the wait status of exit(code) */
  for (int k = 0; k < 2; k++) end_stream(e, k);
  end_stdin(e);
}

static void reply_error(const char *key, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void reply_error(const char *key, const char *fmt, ...) {
  char text[128];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  put("error %s %s\n", key, text);
}

static void do_exec(char **f, size_t n) {
  const char *key = f[1];
  if (!valid_key(key)) return reply_error("-", "bad-key");
  if (n < 11) return reply_error(key, "bad-request");
  const char *flags = f[2], *cwd = f[8];
  uint64_t cap, grace, deadline, rows, cols, nenv;
  if (parse_u64(f[3], &cap) || parse_u64(f[4], &grace) || parse_u64(f[5], &deadline) ||
      parse_u64(f[6], &rows) || parse_u64(f[7], &cols) || parse_u64(f[9], &nenv) ||
      rows > 65535 || cols > 65535 || grace > INT32_MAX || deadline > INT64_MAX / 2 ||
      cwd[0] != '/' || nenv > n - 11 || !*flags) {
    return reply_error(key, "bad-request");
  }
  int fo = 0, fe = 0, fm = 0, ft = 0, fd = 0, fr = 0, fi = 0;
  if (strcmp(flags, "-") != 0) {
    for (const char *c = flags; *c; c++) {
      switch (*c) {
        case 'o': fo = 1; break;
        case 'e': fe = 1; break;
        case 'm': fm = 1; break;
        case 't': ft = 1; break;
        case 'd': fd = 1; break;
        case 'r': fr = 1; break;
#ifndef TASKROUTER_AGENT_WITHOUT_RING /* built so by test/agent-fallback.test.ts only */
        case 'i': fi = 1; break;
#endif
        default: return reply_error(key, "bad-request");
      }
    }
  }
  if (fr && cap == 0) return reply_error(key, "bad-request");
  if (find(key)) return reply_error(key, "exists");
  if (fd && !debug_caps) return reply_error(key, "no-debug");
  if (ft) fe = fm = 0;
  if (fm) fe = 0; /* stderr shares stdout's pipe (or /dev/null) */

  struct exec *e = new_exec(key);
  e->pty = ft;
  e->in_ring = fi;
  e->cap = fr ? 0 : cap;
  e->retain = fr ? cap : 0;
  e->grace = grace;
  e->s[0].wanted = fo;
  e->s[1].wanted = fe;
  const char *fail = NULL;
  int fail_errno = 0;
  int cin[2] = {-1, -1}, cout[2] = {-1, -1}, cerr[2] = {-1, -1};
  char slave[128];

  /* KEY.out/KEY.err are created at their first byte, KEY.in at the first `in` past 0. */
  if (ft) {
    struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
    e->master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (e->master < 0 || grantpt(e->master) < 0 || unlockpt(e->master) < 0 ||
        ptsname_r(e->master, slave, sizeof slave) != 0 ||
        ioctl(e->master, TIOCSWINSZ, &ws) < 0 ||
        fcntl(e->master, F_SETFL, O_NONBLOCK) < 0) {
      fail = "pty";
      fail_errno = errno;
    }
    e->s[0].fd = e->in_fd = e->master;
  } else if (!fail) {
    if (make_pipe(cin, 1) < 0 || (fo && make_pipe(cout, 0) < 0) || (fe && make_pipe(cerr, 0) < 0)) {
      fail = "pipe";
      fail_errno = errno;
    } else {
      if (fo) fcntl(cout[0], F_SETPIPE_SZ, OUT_PIPE_SIZE); /* at most pipe-max-size; best effort */
      if (fe) fcntl(cerr[0], F_SETPIPE_SZ, OUT_PIPE_SIZE);
      e->in_fd = cin[1];
      e->s[0].fd = cout[0];
      e->s[1].fd = cerr[0];
    }
  }
  if (!fail && deadline) {
    e->dl_fd = timerfd_create(CLOCK_REALTIME, TFD_CLOEXEC | TFD_NONBLOCK);
    if (e->dl_fd < 0) {
      fail = "timer";
      fail_errno = errno;
    }
  }
  if (fail) {
    close_fd(&cin[0]);
    close_fd(&cout[1]);
    close_fd(&cerr[1]);
    free_exec_fds(e);
    free(e);
    return reply_error(key, "%s %d", fail, fail_errno);
  }

  size_t env0 = 10, argv0 = 10 + (size_t)nenv;
  char **envp = calloc((size_t)nenv + 1, sizeof *envp);
  char **argv = calloc(n - argv0 + 1, sizeof *argv);
  char **shargv = calloc(n - argv0 + 2, sizeof *shargv);
  if (!envp || !argv || !shargv) exit(1);
  const char *path = DEFAULT_PATH;
  for (size_t i = 0; i < nenv; i++) {
    envp[i] = f[env0 + i];
    if (strncmp(envp[i], "PATH=", 5) == 0) path = envp[i] + 5;
  }
  memcpy(argv, f + argv0, (n - argv0) * sizeof *argv);
  shargv[0] = "/bin/sh";
  memcpy(shargv + 2, f + argv0 + 1, (n - argv0 - 1) * sizeof *shargv);
  char **files = candidates(argv[0], path);

  int out_w = fo ? cout[1] : devnull;
  struct spawn_req r = {
      .in = cin[0],
      .out = out_w,
      .err = fm ? out_w : (fe ? cerr[1] : devnull),
      .slave = ft ? slave : NULL,
      .cwd = cwd,
      .files = files,
      .argv = argv,
      .shargv = shargv,
      .envp = envp,
      .drop_ptrace = debug_caps && !fd,
  };
  child_stage = STAGE_NONE;
  child_errno = 0;
  pid_t pid = start_child(&r);
  int spawn_errno = errno, stage = child_stage, cerrno = child_errno;
  close_fd(&cin[0]);
  close_fd(&cout[1]);
  close_fd(&cerr[1]);
  free_vec(files);
  free(envp);
  free(argv);
  free(shargv);
  if (pid > 0 && stage != STAGE_NONE) {
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
  }
  if (pid < 0 || stage == STAGE_SETUP || stage == STAGE_CAPS) {
    free_exec_fds(e);
    free(e);
    return reply_error(key, "%s %d", pid < 0 ? "spawn" : stage == STAGE_CAPS ? "caps" : "spawn",
                 pid < 0 ? spawn_errno : cerrno);
  }
  e->pid = pid;
  keep(e);
  put("started %s %d\n", key, (int)pid);
  if (stage != STAGE_NONE) return not_started(e, stage, cerrno, f[argv0], cwd, ft || fm);
  if (e->dl_fd >= 0 && arm(e->dl_fd, TFD_TIMER_ABSTIME, (int64_t)deadline) < 0) {
    kill(-pid, SIGKILL); /* never run past a deadline that could not be armed */
  }
}

/* ---- requests ---- */

static int field_u64(const char *s, uint64_t max, uint64_t *v) {
  return parse_u64(s, v) == 0 && *v <= max ? 0 : -1;
}

static void quit(void) {
  for (struct exec *e = first; e; e = e->next) kill_group(e, SIGKILL);
  for (struct exec *e = first; e; e = e->next) {
    if (e->reaped) continue;
    int status;
    pid_t r;
    do {
      r = waitpid(e->pid, &status, 0);
    } while (r < 0 && errno == EINTR);
    if (r == e->pid) {
      e->reaped = 1;
      e->signaled = WIFSIGNALED(status);
      e->status = e->signaled ? WTERMSIG(status) : WEXITSTATUS(status);
      write_exit_file(e);
      ordered(e, "exit %s %s %d\n", e->key, e->signaled ? "signal" : "code", e->status);
    }
  }
  flush(); /* best effort: the router asked for the end */
  close_fd(&conn);
  close_fd(&listener);
  exit(0);
}

static void handle_fields(char **f, size_t n) {
  const char *verb = f[0];
  const char *key = n > 1 && valid_key(f[1]) ? f[1] : "-";
  uint64_t a, b;
  if (strcmp(verb, "exec") == 0) {
    do_exec(f, n);
    struct exec *e = find(f[1] && valid_key(f[1]) ? f[1] : "");
    if (e && !e->forgotten) update(e);
    return;
  }
  if (strcmp(verb, "in") == 0 || strcmp(verb, "eof") == 0) {
    if (n != 3 || field_u64(f[2], INT64_MAX, &a)) return reply_error(key, "bad-request");
    struct exec *e = find_live(f[1]);
    if (!e || e->in_ended) return;
    /* Absent KEY.in: nothing to copy (feed stops at once, as for a short file). */
    if (a > e->in_pos && e->in_file < 0) {
      /* Read-write to free what was taken (see "Memory"); read-only when that is refused. */
      e->in_file = open_key(e->key, "in", O_RDWR, 0);
      if (e->in_file < 0 && errno != ENOENT) e->in_file = open_key(e->key, "in", O_RDONLY, 0);
    }
    /* A ring holds 64 MiB past the position: more was never written by a router that knows
       rings (one that does not would count the ring's size: nothing past it is fed). */
    if (e->in_ring && a > e->in_pos + RING_SIZE) return;
    if (a > e->in_want) e->in_want = a;
    if (verb[0] == 'e') e->in_eof = 1;
    feed(e);
    return update(e);
  }
  if (strcmp(verb, "kill") == 0) {
    if (n != 3 || field_u64(f[2], 64, &a)) return reply_error(key, "bad-request");
    struct exec *e = find_live(f[1]);
    if (e && !e->reaped) kill(-e->pid, (int)a);
    return;
  }
  if (strcmp(verb, "resize") == 0) {
    if (n != 4 || field_u64(f[2], 65535, &a) || field_u64(f[3], 65535, &b)) {
      return reply_error(key, "bad-request");
    }
    struct exec *e = find_live(f[1]);
    struct winsize ws = {.ws_row = (unsigned short)a, .ws_col = (unsigned short)b};
    if (e && e->master >= 0) ioctl(e->master, TIOCSWINSZ, &ws);
    return;
  }
  if (strcmp(verb, "list") == 0 && n == 1) {
    for (struct exec *e = first; e; e = e->next) {
      char run[32] = "run";
      if (e->reaped) snprintf(run, sizeof run, "%s:%d", e->signaled ? "signal" : "code", e->status);
      put("state %s %d %s %llu %d %llu %d %llu %d %d\n", e->key, (int)e->pid, run,
          (unsigned long long)e->s[0].len, e->s[0].ended, (unsigned long long)e->s[1].len,
          e->s[1].ended, (unsigned long long)e->in_pos, e->in_ended, e->in_ring);
    }
    return put("listed\n");
  }
  if (strcmp(verb, "forget") == 0 && n == 2) {
    struct exec *e = find_live(f[1]);
    if (!e || !e->reaped || !e->s[0].ended || !e->s[1].ended) return;
    free_exec_fds(e);
    update(e); /* forgets the registrations of the closed fds */
    e->forgotten = 1;
    e->dirty = 0;
    if (e->prev) e->prev->next = e->next;
    else first = e->next;
    if (e->next) e->next->prev = e->prev;
    else last_exec = e->prev;
    e->next = e->prev = NULL; /* stays in the table: a KEY is used once */
    static const char *const files[] = {"in", "inlen", "out", "err", "kept", "kept.new"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
      char name[MAX_KEY + 16];
      snprintf(name, sizeof name, "%s.%s", e->key, files[i]);
      unlinkat(DIR_FD, name, 0); /* NAME has no `/`: never follows a link; absent is fine */
    }
    exits_kept--;
    return compact_exits();
  }
  if (strcmp(verb, "seen") == 0) {
    if (n != 4 || (strcmp(f[2], "out") != 0 && strcmp(f[2], "err") != 0) ||
        field_u64(f[3], INT64_MAX, &a) || !valid_key(f[1])) {
      return reply_error(key, "bad-request");
    }
    /* O_NONBLOCK: a FIFO planted under that name must not block the agent. */
    int fd = open_key(f[1], f[2], O_RDONLY | O_NONBLOCK, 0);
    struct stat st;
    uint64_t hi = a & ~(KEPT_ALIGN - 1), lo = hi > SHED_BACK ? hi - SHED_BACK : 0;
    if (fd >= 0 && hi > lo && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
      posix_fadvise(fd, (off_t)lo, (off_t)(hi - lo), POSIX_FADV_DONTNEED);
    }
    if (fd >= 0) close(fd);
    return;
  }
  if (strcmp(verb, "quit") == 0 && n == 1) return quit();
  if (strcmp(verb, "ping") == 0 && n == 2 && strlen(f[1]) <= 64 &&
      strspn(f[1], "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.") ==
          strlen(f[1])) {
    materialize_all();
    return put("pong %s\n", f[1]);
  }
  reply_error(key, "bad-request");
}

/* One frame's payload; -1 when malformed (the last field is not NUL-terminated). */
static int handle(char *p, size_t len) {
  if (len == 0 || p[len - 1] != '\0') return -1;
  size_t nf = 0;
  for (size_t i = 0; i < len; i++) nf += p[i] == '\0';
  char **f = malloc((nf + 1) * sizeof *f);
  if (!f) exit(1);
  size_t n = 0;
  for (size_t i = 0; i < len; n++) {
    f[n] = p + i;
    i += strlen(p + i) + 1;
  }
  f[n] = NULL;
  handle_fields(f, n);
  free(f);
  return 0;
}

static void read_conn(void) {
  if (ib_len == ib_cap) {
    size_t need = ib_cap ? ib_cap * 2 : 64 * 1024;
    if (ib_len >= 4) {
      uint32_t l;
      memcpy(&l, ib, 4);
      need = (size_t)l + 4;
    }
    if (need > MAX_FRAME + 4) return drop_conn();
    unsigned char *nb = realloc(ib, need);
    if (!nb) return drop_conn();
    ib = nb;
    ib_cap = need;
  }
  ssize_t r = read(conn, ib + ib_len, ib_cap - ib_len);
  if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) return;
  if (r <= 0) return drop_conn(); /* the router is gone (a partial frame goes with it) */
  ib_len += (size_t)r;
  size_t off = 0;
  unsigned gen = conn_gen;
  while (ib_len - off >= 4) {
    uint32_t l;
    memcpy(&l, ib + off, 4);
    if (l == 0 || l > MAX_FRAME) return drop_conn();
    if (ib_len - off - 4 < l) break;
    if (handle((char *)ib + off + 4, l) < 0) return drop_conn();
    if (gen != conn_gen) return; /* the connection went while answering */
    off += 4 + (size_t)l;
  }
  memmove(ib, ib + off, ib_len - off);
  ib_len -= off;
  if (ib_len >= 4) { /* room for the whole next frame */
    uint32_t l;
    memcpy(&l, ib, 4);
    if (l == 0 || l > MAX_FRAME) return drop_conn();
    if ((size_t)l + 4 > ib_cap) {
      unsigned char *nb = realloc(ib, (size_t)l + 4);
      if (!nb) return drop_conn();
      ib = nb;
      ib_cap = (size_t)l + 4;
    }
  }
}

static void accept_conns(void) {
  for (;;) {
    int c = accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0) return;
    drop_conn(); /* the newest connection is the router */
    conn = c;
  }
}

/* ---- the loop ---- */

enum { R_OUT, R_ERR, R_IN, R_DL, R_GRACE, R_SIGNAL, R_LISTEN, R_CONN };
static int ep = -1;
static struct reg signal_reg = {NULL, R_SIGNAL, -1, 0}, listen_reg = {NULL, R_LISTEN, -1, 0},
                  conn_reg = {NULL, R_CONN, -1, 0};

/* Registers fd, or changes its interest, only when that differs from what is registered.
   Closing an fd drops its registration (no fd of ours is ever dup'ed), so a closed one is
   just forgotten here. */
static void want(struct reg *r, int fd, uint32_t mask) {
  if (fd < 0) {
    r->fd = -1;
    return;
  }
  if (r->fd == fd && r->mask == mask) return;
  struct epoll_event ev = {.events = mask, .data.ptr = r};
  int op = r->fd == fd ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  if (epoll_ctl(ep, op, fd, &ev) < 0 && (errno != EEXIST || epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0)) {
    exit(1); /* out of memory or watches: nothing can be served */
  }
  r->fd = fd;
  r->mask = mask;
}

/* e's registrations as its state asks: output is read unless at the cap (a hangup is
   reported anyway), stdin is written while KEY.in has bytes for it, a pipe's stdin is
   watched for its reader leaving (EPOLLERR), a pty's master is one registration for both
   directions. Called after anything that may change e's fds or interest. */
static void update(struct exec *e) {
  int in_pending = e->in_fd >= 0 && e->in_pos < e->in_want;
  for (int i = 0; i < 2; i++) {
    struct stream *s = &e->s[i];
    uint32_t mask = s->wanted && room(e) == 0 ? 0 : EPOLLIN;
    if (e->pty && i == 0 && in_pending) mask |= EPOLLOUT;
    want(&e->reg[i ? R_ERR : R_OUT], s->fd, mask);
  }
  want(&e->reg[R_IN], e->pty ? -1 : e->in_fd, in_pending ? EPOLLOUT : 0);
  want(&e->reg[R_DL], e->dl_fd, EPOLLIN);
  want(&e->reg[R_GRACE], e->grace_fd, EPOLLIN);
}

static void update_conn(void) {
  static unsigned registered_gen;
  if (registered_gen != conn_gen) { /* the connection changed: the old one was closed */
    registered_gen = conn_gen;
    conn_reg.fd = -1;
  }
  want(&conn_reg, conn, EPOLLIN | (q_off < q_len ? EPOLLOUT : 0));
}

/* One ready registration of exec e. */
static void on_exec_event(struct reg *r, uint32_t rev) {
  struct exec *e = r->e;
  int fd = r->fd;
  switch (r->type) {
    case R_OUT:
    case R_ERR: {
      int i = r->type == R_ERR;
      if (fd < 0 || e->s[i].fd != fd) break; /* closed during this turn */
      if (e->pty && i == 0 && (rev & EPOLLOUT)) feed(e);
      if (e->s[i].fd != fd) break;
      if (e->s[i].wanted && room(e) == 0) {
        if (rev & (EPOLLHUP | EPOLLERR)) end_stream(e, i); /* nothing more can come */
      } else if (rev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        pump(e, i);
      }
      break;
    }
    case R_IN:
      if (fd < 0 || e->in_fd != fd) break;
      if (rev & EPOLLOUT) feed(e);
      if (e->in_fd == fd && (rev & EPOLLERR)) end_stdin(e);
      break;
    case R_DL:
      if (fd >= 0 && e->dl_fd == fd) deadline_fired(e);
      break;
    case R_GRACE:
      if (fd >= 0 && e->grace_fd == fd) grace_fired(e);
      break;
  }
  update(e);
}

static void serve(int sfd) {
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) exit(1);
  want(&signal_reg, sfd, EPOLLIN);
  want(&listen_reg, listener, EPOLLIN);
  struct epoll_event evs[256];
  for (;;) {
    flush();
    update_conn();
    int n = epoll_wait(ep, evs, (int)(sizeof evs / sizeof evs[0]), -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      exit(1);
    }
    for (int k = 0; k < n; k++) {
      struct reg *r = evs[k].data.ptr;
      uint32_t rev = evs[k].events;
      switch (r->type) {
        case R_SIGNAL: {
          struct signalfd_siginfo si;
          while (read(sfd, &si, sizeof si) > 0) {
          }
          reap();
          break;
        }
        case R_LISTEN:
          accept_conns();
          break;
        case R_CONN:
          if (conn >= 0 && conn_reg.fd == conn && (rev & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
            read_conn();
          }
          break;
        default:
          on_exec_event(r, rev);
      }
    }
  }
}

int main(int argc, char **argv) {
  int own_group = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-d") == 0) {
      debug_caps = 1;
    } else if (strcmp(argv[i], "-p") == 0) {
      own_group = 1;
    } else {
      fprintf(stderr, "usage: taskrouter-agent [-d] [-p]  (fd 3: the exec directory)\n");
      return 2;
    }
  }
  struct stat st;
  if (fstat(DIR_FD, &st) < 0 || !S_ISDIR(st.st_mode) || fcntl(DIR_FD, F_SETFD, FD_CLOEXEC) < 0) {
    fprintf(stderr, "taskrouter-agent: fd 3 is not the exec directory\n");
    return 2;
  }
  if (getppid() == 0) { /* see "Started from outside its pid namespace" above */
    pid_t child = fork();
    if (child < 0) {
      perror("taskrouter-agent: fork");
      return 1;
    }
    if (child > 0) _exit(0);
  }
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  if (own_group) setpgid(0, 0);
  struct sigaction sa = {.sa_handler = SIG_DFL};
  for (int sig = 1; sig < NSIG; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    sa.sa_handler = sig == SIGPIPE ? SIG_IGN : SIG_DFL;
    sigaction(sig, &sa, NULL);
  }
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_SETMASK, &chld, NULL);
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) {
    perror("taskrouter-agent: signalfd");
    return 1;
  }
  /* Many execs hold many files: our limit up to the hard one, the children's as it was. */
  getrlimit(RLIMIT_NOFILE, &orig_nofile);
  struct rlimit raised = orig_nofile;
  raised.rlim_cur = raised.rlim_max;
  setrlimit(RLIMIT_NOFILE, &raised);

  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  memcpy(addr.sun_path, SOCK_NAME, sizeof SOCK_NAME);
  listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listener < 0 || fchdir(DIR_FD) < 0 || (unlink(SOCK_NAME) < 0 && errno != ENOENT) ||
      bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 16) < 0 ||
      chdir("/") < 0) {
    perror("taskrouter-agent: " SOCK_NAME);
    return 1;
  }
  exits_fd = open_beneath("exits", O_WRONLY | O_APPEND | O_CREAT, 0600);
  if (exits_fd < 0) {
    perror("taskrouter-agent: exits");
    return 1;
  }
  devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0) {
    perror("taskrouter-agent: /dev/null");
    return 1;
  }
  static const char ready[] = "ready\n";
  if (write(STDOUT_FILENO, ready, sizeof ready - 1) < 0) {
    /* nobody to tell: serve anyway (the router may find the socket) */
  }
  for (int i = 0; i < 3; i++) dup2(devnull, i);
  serve(sfd);
}
