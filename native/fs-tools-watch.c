/*
 * Watch, the one long-running command of modal-sandbox-fs-tools (see
 * fs-tools.c and FS-TOOLS.md section 4): inotify events as JSON lines,
 *
 *   {"event_type":"Create","paths":["/w/f1.txt"]}
 *
 * each written and flushed on its own, until the first of: timeout_secs since
 * the start, stdin EOF (or a read error on it), EPIPE on stdout (or poll()
 * reporting its reader gone), SIGTERM, SIGINT or SIGHUP; all of them exit 0.
 * poll() waits on stdin and the inotify descriptor together, so an EOF is
 * noticed at once.
 *
 * - The path is resolved with realpath first: events name paths under the
 *   resolved target. Errors (missing, EACCES, no inotify) come before output.
 * - A file: events about it. A directory: itself and its entries; with
 *   `recursive`, every directory below it gets a watch too, including those
 *   created or moved in later (never through a symlink); what a new
 *   directory already holds when its watch is added is reported as Create.
 * - Mapping, without debouncing: IN_CREATE Create; IN_MODIFY, IN_ATTRIB
 *   Modify; IN_CLOSE_WRITE Access; IN_DELETE Remove; the root's
 *   IN_DELETE_SELF Remove, IN_MOVE_SELF RenameFrom (a deleted root: the watch
 *   goes on until timeout or EOF); IN_Q_OVERFLOW Unknown [root].
 *   IN_MOVED_FROM and IN_MOVED_TO with one cookie: Rename [from, to]; a
 *   MOVED_FROM not followed by its MOVED_TO (the kernel queues them one behind
 *   the other; at the end of a read batch, within ~50 ms): RenameFrom [from];
 *   a lone MOVED_TO: RenameTo [to]. A directory's own events on its watch are
 *   left to its parent's (one event, not two), except for the root.
 * - `filter` (a bit per event_type) drops the rest; unknown names ignored.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Shared with fs-tools.c (declared there the same way). */
_Noreturn void fail_os(const char *op, int err);
_Noreturn void fail_kind(const char *kind, const char *message, const char *detail);
void out_raw(const char *s);
void out_json_str(const char *s);
void out_flush(void);
char *path_join(const char *dir, const char *name);
unsigned watch_kind(const char *name, size_t len);
void watch(const char *path, int recursive, unsigned filter, long long timeout_secs);

enum { ACCESS, CREATE, MODIFY, REMOVE, UNKNOWN, RENAME, RENAME_FROM, RENAME_TO, N_KINDS };
static const char *const KINDS[N_KINDS] = {"Access", "Create",     "Modify",  "Remove",
                                           "Unknown", "Rename", "RenameFrom", "RenameTo"};

/* The filter bit of an event_type name; 0 for names not known. */
unsigned watch_kind(const char *name, size_t len) {
  for (int i = 0; i < N_KINDS; i++)
    if (strlen(KINDS[i]) == len && memcmp(KINDS[i], name, len) == 0) return 1u << i;
  return 0;
}

#define MASK                                                                                       \
  (IN_CREATE | IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE | IN_DELETE_SELF |                \
   IN_MOVED_FROM | IN_MOVED_TO | IN_MOVE_SELF)
#define PAIR_MS 50 /* how long a MOVED_FROM waits for its MOVED_TO */

static int ifd = -1, root_wd = -1, recursive;
static unsigned filter;
static char *root;
static char **wds; /* wd -> the watched path */
static size_t nwds;

struct pending {
  uint32_t cookie;
  int isdir;
  long long at;
  char *path;
};
static struct pending pend[64]; /* MOVED_FROMs waiting for their MOVED_TO, oldest first */
static int npend;

static char *xstrdup(const char *s) {
  char *p = strdup(s);
  if (!p) fail_os("malloc", ENOMEM);
  return p;
}

static void emit(int kind, const char *a, const char *b) {
  if (!(filter & (1u << kind))) return;
  out_raw("{\"event_type\":\"");
  out_raw(KINDS[kind]);
  out_raw("\",\"paths\":[");
  out_json_str(a);
  if (b) out_raw(","), out_json_str(b);
  out_raw("]}\n");
  out_flush(); /* exits 0 on EPIPE */
}

/* Watches `path`; -1 when it cannot be watched (a subdirectory: skipped). */
static int add_watch(const char *path, int is_root) {
  int wd = inotify_add_watch(ifd, path, MASK | (is_root ? 0 : IN_ONLYDIR | IN_DONT_FOLLOW));
  if (wd < 0) {
    if (errno == ENOSPC)
      fail_kind("Io", "too many watched directories: the inotify watch limit is reached "
                      "(fs.inotify.max_user_watches)",
                "inotify_add_watch: No space left on device (os error 28)");
    if (is_root) fail_os("watch", errno);
    return -1;
  }
  if ((size_t)wd >= nwds) {
    size_t n = (size_t)wd + 64;
    char **grown = realloc(wds, n * sizeof *wds);
    if (!grown) fail_os("malloc", ENOMEM);
    memset(grown + nwds, 0, (n - nwds) * sizeof *wds);
    wds = grown, nwds = n;
  }
  free(wds[wd]);
  wds[wd] = xstrdup(path);
  return wd;
}

/* Watches every directory below `dir`; `created`: report what is there as Create. */
static void add_tree(const char *dir, int created) {
  DIR *d = opendir(dir);
  if (!d) return; /* unreadable or gone: nothing to watch there */
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    char *p = path_join(dir, e->d_name);
    int isdir = e->d_type == DT_DIR;
    struct stat st;
    if (e->d_type == DT_UNKNOWN) isdir = lstat(p, &st) == 0 && S_ISDIR(st.st_mode);
    if (created) emit(CREATE, p, NULL);
    if (isdir && add_watch(p, 0) >= 0) add_tree(p, created);
    free(p);
  }
  closedir(d);
}

static int under(const char *p, const char *prefix) {
  size_t n = strlen(prefix);
  return strncmp(p, prefix, n) == 0 && (p[n] == '\0' || p[n] == '/');
}

/* A directory moved out of scope: its watches (and those below) go. */
static void forget_tree(const char *dir) {
  for (size_t wd = 0; wd < nwds; wd++) {
    if (!wds[wd] || (int)wd == root_wd || !under(wds[wd], dir)) continue;
    inotify_rm_watch(ifd, (int)wd);
    free(wds[wd]);
    wds[wd] = NULL;
  }
}

/* A directory renamed within scope: its watches keep their inodes, get new paths. */
static void rename_tree(const char *from, const char *to) {
  size_t n = strlen(from);
  for (size_t wd = 0; wd < nwds; wd++) {
    if (!wds[wd] || (int)wd == root_wd || !under(wds[wd], from)) continue;
    char *p = path_join(to, wds[wd][n] ? wds[wd] + n + 1 : "");
    if (!wds[wd][n]) p[strlen(to)] = '\0'; /* the directory itself */
    free(wds[wd]);
    wds[wd] = p;
  }
}

static void moved_out(struct pending *p) {
  emit(RENAME_FROM, p->path, NULL);
  if (p->isdir && recursive) forget_tree(p->path);
  free(p->path);
}

/* Reports the MOVED_FROMs whose partner did not come in time (all: when it cannot come). */
static void flush_pending(long long now, int all) {
  int kept = 0;
  for (int i = 0; i < npend; i++) {
    if (all || now - pend[i].at >= PAIR_MS) moved_out(&pend[i]);
    else pend[kept++] = pend[i];
  }
  npend = kept;
}

static void handle(const struct inotify_event *e, long long now) {
  /* The kernel queues a MOVED_TO right behind its MOVED_FROM: any other event
   * means the pending MOVED_FROM has no partner (and keeps the order of events). */
  int partner = 0;
  for (int i = 0; i < npend && (e->mask & IN_MOVED_TO); i++) partner |= pend[i].cookie == e->cookie;
  if (npend && !partner) flush_pending(now, 1);
  if (e->mask & IN_Q_OVERFLOW) {
    emit(UNKNOWN, root, NULL);
    return;
  }
  if (e->wd < 0 || (size_t)e->wd >= nwds || !wds[e->wd]) return; /* a watch we dropped */
  if (e->mask & IN_IGNORED) {
    free(wds[e->wd]);
    wds[e->wd] = NULL;
    return;
  }
  int isdir = (e->mask & IN_ISDIR) != 0, named = e->len > 0 && e->name[0];
  if (!named && e->wd != root_wd) return; /* a subdirectory's own event: its parent reports it */
  char *p = named ? path_join(wds[e->wd], e->name) : xstrdup(wds[e->wd]);
  if (e->mask & IN_CREATE) {
    emit(CREATE, p, NULL);
    if (isdir && recursive && add_watch(p, 0) >= 0) add_tree(p, 1);
  } else if (e->mask & (IN_MODIFY | IN_ATTRIB)) emit(MODIFY, p, NULL);
  else if (e->mask & IN_CLOSE_WRITE) emit(ACCESS, p, NULL);
  else if (e->mask & (IN_DELETE | IN_DELETE_SELF)) emit(REMOVE, p, NULL);
  else if (e->mask & IN_MOVE_SELF) emit(RENAME_FROM, p, NULL);
  else if (e->mask & IN_MOVED_FROM) {
    if (npend == (int)(sizeof pend / sizeof *pend)) {
      moved_out(&pend[0]);
      memmove(pend, pend + 1, (size_t)--npend * sizeof *pend);
    }
    pend[npend++] = (struct pending){e->cookie, isdir, now, p};
    return; /* p is kept */
  } else if (e->mask & IN_MOVED_TO) {
    int i = 0;
    while (i < npend && pend[i].cookie != e->cookie) i++;
    if (i < npend) {
      emit(RENAME, pend[i].path, p);
      if (isdir && recursive) rename_tree(pend[i].path, p);
      free(pend[i].path);
      memmove(pend + i, pend + i + 1, (size_t)(npend - i - 1) * sizeof *pend);
      npend--;
    } else {
      emit(RENAME_TO, p, NULL);
      if (isdir && recursive && add_watch(p, 0) >= 0) add_tree(p, 0);
    }
  }
  free(p);
}

static volatile sig_atomic_t stop;
static void on_stop(int sig) {
  (void)sig;
  stop = 1;
}

static long long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

_Noreturn static void finish(void) {
  flush_pending(0, 1);
  _exit(0);
}

void watch(const char *path, int rec, unsigned flt, long long timeout_secs) {
  long long start = now_ms();
  filter = flt;
  if (!(root = realpath(path, NULL))) fail_os("resolve the path", errno);
  struct stat st;
  if (stat(root, &st) < 0) fail_os("stat", errno);
  recursive = rec && S_ISDIR(st.st_mode);
  if ((ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0) {
    if (errno == EMFILE)
      fail_kind("Io", "too many inotify instances (fs.inotify.max_user_instances)",
                "inotify_init1: Too many open files (os error 24)");
    fail_os("inotify_init1", errno); /* ENOSYS: NotSupported */
  }
  root_wd = add_watch(root, 1);
  if (timeout_secs == 0) _exit(0);
  if (recursive) add_tree(root, 0);

  /* The stop signals are taken only inside ppoll: never halfway through a line. */
  sigset_t sigs, waiting;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM), sigaddset(&sigs, SIGINT), sigaddset(&sigs, SIGHUP);
  sigprocmask(SIG_BLOCK, &sigs, &waiting);
  sigdelset(&waiting, SIGTERM), sigdelset(&waiting, SIGINT), sigdelset(&waiting, SIGHUP);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop; /* no SA_RESTART: ppoll returns EINTR */
  sigaction(SIGTERM, &sa, NULL), sigaction(SIGINT, &sa, NULL), sigaction(SIGHUP, &sa, NULL);

  long long deadline = timeout_secs < 0 ? -1 : start + timeout_secs * 1000;
  static char buf[1 << 16] __attribute__((aligned(__alignof__(struct inotify_event))));
  char junk[4096];
  /* stdout only for POLLERR: its reader gone, as an EPIPE would tell at the next event */
  struct pollfd fds[3] = {{0, POLLIN, 0}, {ifd, POLLIN, 0}, {1, 0, 0}};
  for (;;) {
    long long now = now_ms();
    flush_pending(now, 0);
    if (stop || (deadline >= 0 && now >= deadline)) finish();
    long long wait = deadline >= 0 ? deadline - now : -1;
    if (npend) {
      long long w = pend[0].at + PAIR_MS - now;
      if (w < 0) w = 0;
      if (wait < 0 || w < wait) wait = w;
    }
    struct timespec ts = {(time_t)(wait / 1000), (long)(wait % 1000) * 1000000};
    if (ppoll(fds, 3, wait < 0 ? NULL : &ts, &waiting) < 0) {
      if (errno == EINTR) continue;
      fail_os("poll", errno);
    }
    if (fds[2].revents & (POLLERR | POLLHUP | POLLNVAL)) _exit(0);
    if (fds[0].revents) { /* the SDKs never write data: only EOF matters */
      ssize_t n = read(0, junk, sizeof junk);
      if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) finish();
    }
    if (fds[1].revents) {
      ssize_t n = read(ifd, buf, sizeof buf);
      if (n < 0 && errno != EAGAIN && errno != EINTR) fail_os("read inotify events", errno);
      now = now_ms();
      for (char *q = buf; n > 0 && q < buf + n;) {
        const struct inotify_event *e = (const struct inotify_event *)q;
        handle(e, now);
        q += sizeof *e + e->len;
      }
    }
  }
}
