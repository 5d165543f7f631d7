/*
 * Connections of taskrouter-h2read.node's receiver (native/h2-read.c): dial a
 * target, open an HTTP/2 client session on it, and keep idle ones for the
 * next call to the same target, so a bulk read does not pay for a new TCP
 * connection, HTTP/2 preface and the router's session setup each time.
 *
 * Contract (native/h2-read.h):
 *   h2r_conn_get(target, user, cb, &reused, cancelled)  an idle connection to
 *     `target` (the most recently kept), its `user` set; else a new one:
 *     dialled (given up after 20 s, or once cancelled(user) is true), with
 *     a session made from `cb` (SETTINGS: no push, a 16 MiB stream window; a
 *     16 MiB connection window) whose user data is the Conn. NULL when it
 *     cannot connect.
 *   h2r_conn_put(c)   keeps `c` idle, `user` NULL (the oldest beyond MAX_IDLE
 *     is closed). Only a connection whose last call ended cleanly is kept.
 *   h2r_conn_drop(c)  closes it.
 * Idle connections are watched by one thread (started with the first kept
 * one): it reads what the server sends them (PINGs are answered), and closes
 * one when the server closed it or sent GOAWAY (as grpc-js would: a router
 * shutting down is not kept waiting) or when it has been idle IDLE_SECS. A
 * kept connection may still die between that and its next call: the caller
 * redials when a call on a reused connection fails before any byte came.
 */
#define _GNU_SOURCE
#include "h2-read.h"
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_IDLE 4
#define IDLE_SECS 60
#define CONNECT_SECS 20 /* grpc-js's connect timeout */

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static Conn *pool; /* most recently kept first */

/* connect(2) that gives up after CONNECT_SECS or as soon as `cancelled` says so. */
static int connect_within(int fd, const struct sockaddr *a, socklen_t len,
                          int (*cancelled)(void *), void *arg) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -1;
  if (connect(fd, a, len) != 0) {
    if (errno != EINPROGRESS) return -1;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int waited = 0, err = 0;
    for (;;) {
      if (cancelled(arg) || waited >= CONNECT_SECS * 10) return -1;
      int n = poll(&p, 1, 100);
      if (n > 0) break;
      if (n < 0 && errno != EINTR) return -1;
      waited++;
    }
    socklen_t el = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) return -1;
  }
  return fcntl(fd, F_SETFL, fl);
}

static int dial(const char *target, int (*cancelled)(void *), void *arg) {
  char host[256];
  const char *colon = strrchr(target, ':');
  if (!colon || (size_t)(colon - target) >= sizeof host) return -1;
  memcpy(host, target, (size_t)(colon - target));
  host[colon - target] = 0;
  char *h = host;
  size_t hl = strlen(h);
  if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') h[hl - 1] = 0, h++;
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
  if (getaddrinfo(h, colon + 1, &hints, &res) != 0) return -1;
  int fd = -1;
  for (struct addrinfo *a = res; a; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (connect_within(fd, a->ai_addr, a->ai_addrlen, cancelled, arg) == 0) break;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd >= 0) {
    /* A dead peer or path ends the call within ~1 min, as grpc-js's 30 s keepalive would. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &(int){1}, sizeof(int));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &(int){30}, sizeof(int));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &(int){10}, sizeof(int));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &(int){3}, sizeof(int));
  }
  return fd;
}

void h2r_conn_drop(Conn *c) {
  if (!c) return;
  if (c->s) nghttp2_session_del(c->s);
  if (c->fd >= 0) close(c->fd);
  free(c->target);
  free(c);
}

static time_t now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec;
}

Conn *h2r_conn_get(const char *target, void *user, nghttp2_session_callbacks *cb, int *reused,
                   int (*cancelled)(void *)) {
  Conn *found = NULL, *stale = NULL;
  pthread_mutex_lock(&pool_mu);
  for (Conn **p = &pool; *p;) {
    Conn *c = *p;
    if (now() - c->idle_since > IDLE_SECS) {
      *p = c->next, c->next = stale, stale = c;
    } else if (!found && strcmp(c->target, target) == 0) {
      *p = c->next, c->next = NULL, found = c;
    } else {
      p = &c->next;
    }
  }
  pthread_mutex_unlock(&pool_mu);
  while (stale) {
    Conn *next = stale->next;
    h2r_conn_drop(stale);
    stale = next;
  }
  *reused = found != NULL;
  if (found) {
    found->user = user;
    return found;
  }
  Conn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->user = user;
  c->target = strdup(target);
  c->fd = c->target ? dial(target, cancelled, user) : -1;
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                 {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, WINDOW}};
  if (c->fd < 0 || nghttp2_session_client_new(&c->s, cb, c) != 0 ||
      nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
      nghttp2_session_set_local_window_size(c->s, NGHTTP2_FLAG_NONE, 0, WINDOW) != 0) {
    h2r_conn_drop(c);
    return NULL;
  }
  return c;
}

/* Wakes the watcher when the pool changed; -1 until it runs. */
static int wake_fd = -1;
static pthread_once_t watcher_once = PTHREAD_ONCE_INIT;

/* Takes out of the pool (under pool_mu) what is idle too long or was readable and is done. */
static Conn *sweep(struct pollfd *fds, int n) {
  static uint8_t buf[16384];
  Conn *dead = NULL;
  for (Conn **p = &pool; *p;) {
    Conn *c = *p;
    int drop = now() - c->idle_since > IDLE_SECS;
    for (int i = 1; i < n && !drop; i++) {
      if (fds[i].fd != c->fd || !fds[i].revents) continue;
      ssize_t k = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
      if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
      drop = k <= 0 || nghttp2_session_mem_recv(c->s, buf, (size_t)k) < 0 ||
             nghttp2_session_send(c->s) != 0 || !nghttp2_session_want_read(c->s);
    }
    if (drop) *p = c->next, c->next = dead, dead = c;
    else p = &c->next;
  }
  return dead;
}

static void *watch(void *arg) {
  (void)arg;
  struct pollfd fds[MAX_IDLE + 2];
  for (;;) {
    int n = 0;
    fds[n++] = (struct pollfd){.fd = wake_fd, .events = POLLIN};
    pthread_mutex_lock(&pool_mu);
    for (Conn *c = pool; c && n < MAX_IDLE + 2; c = c->next)
      fds[n++] = (struct pollfd){.fd = c->fd, .events = POLLIN};
    pthread_mutex_unlock(&pool_mu);
    if (poll(fds, (nfds_t)n, 1000) > 0 && fds[0].revents) {
      uint64_t v;
      if (read(wake_fd, &v, sizeof v) < 0) continue;
      continue; /* the pool changed: poll what it holds now */
    }
    pthread_mutex_lock(&pool_mu);
    Conn *dead = sweep(fds, n);
    pthread_mutex_unlock(&pool_mu);
    while (dead) {
      Conn *next = dead->next;
      h2r_conn_drop(dead);
      dead = next;
    }
  }
  return NULL;
}

static void start_watcher(void) {
  wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  pthread_t t;
  if (wake_fd < 0 || pthread_create(&t, NULL, watch, NULL) != 0) {
    if (wake_fd >= 0) close(wake_fd);
    wake_fd = -1;
    return;
  }
  pthread_detach(t);
}

void h2r_conn_put(Conn *c) {
  pthread_once(&watcher_once, start_watcher);
  if (wake_fd < 0) return h2r_conn_drop(c); /* nobody would watch it: keep none */
  c->user = NULL;
  c->idle_since = now();
  Conn *evict = NULL;
  pthread_mutex_lock(&pool_mu);
  c->next = pool;
  pool = c;
  int n = 0;
  for (Conn **p = &pool; *p; p = &(*p)->next) {
    if (++n > MAX_IDLE) {
      evict = *p;
      *p = NULL;
      break;
    }
  }
  pthread_mutex_unlock(&pool_mu);
  uint64_t one = 1;
  ssize_t w = write(wake_fd, &one, sizeof one); /* fails only with the counter full: awake anyway */
  (void)w;
  while (evict) {
    Conn *next = evict->next;
    h2r_conn_drop(evict);
    evict = next;
  }
}
