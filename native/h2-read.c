/*
 * The receiver of taskrouter-h2read.node (the contract with its binding:
 * native/h2-read.h; the JS protocol: native/h2-read-napi.c). On its thread:
 * dial the target, speak HTTP/2 as a client (libnghttp2: framing, HPACK, flow
 * control; a 16 MiB stream and connection window), send the request with
 * END_STREAM, then read the socket in up to 1 MiB reads and cut the response
 * DATA into gRPC messages, copied once into 4 MiB chunks (a message larger
 * than that into a chunk of its own), each message whole in one chunk. A
 * chunk goes to the binding when the next message does not fit, or when the
 * socket has nothing more for now and the chunk ends on a message boundary.
 * With MAX_UNACKED chunks out the thread waits: it stops reading the socket,
 * so TCP and the server's HTTP/2 flow control hold the server back.
 *
 * Every byte from the socket is hostile: a message length is checked (at
 * most 128 MiB) before memory is reserved for it, a compressed message (none
 * was asked for) ends the call, response header fields are capped at 64 KiB.
 * The call ends with r->error set (connect failure, connection lost, protocol
 * error, a limit, close()) or clean with the stream's close code in r->rst.
 */
#define _GNU_SOURCE
#include "h2-read.h"
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

Reader *h2r_new(void) {
  Reader *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  r->fd = -1;
  atomic_init(&r->refs, 1);
  return r;
}

void h2r_unref(Reader *r) {
  if (atomic_fetch_sub(&r->refs, 1) != 1) return;
  for (size_t i = 0; i < r->nvlen; i++) {
    free(r->nva[i].name);
    free(r->nva[i].value);
  }
  free(r->nva);
  free(r->target);
  free(r->body);
  free(r->hdrs);
  free(r->out);
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->cv);
  free(r);
}

static void fail(Reader *r, const char *why) {
  if (!r->error[0]) snprintf(r->error, sizeof r->error, "%s", why);
}

static int is_closed(Reader *r) {
  pthread_mutex_lock(&r->mu);
  int c = r->closed;
  pthread_mutex_unlock(&r->mu);
  return c;
}

/* Hands the current chunk to JS, then waits while MAX_UNACKED are out. */
static void deliver(Reader *r) {
  if (r->out_len == 0) return;
  Event *ev = calloc(1, sizeof *ev);
  if (!ev) {
    fail(r, "out of memory");
    return;
  }
  ev->data = r->out;
  ev->len = r->out_len;
  r->out = NULL;
  r->out_len = r->out_cap = 0;
  pthread_mutex_lock(&r->mu);
  r->unacked++;
  pthread_mutex_unlock(&r->mu);
  if (r->emit(r, ev) != 0) {
    free(ev->data);
    free(ev);
    fail(r, "closed");
    return;
  }
  pthread_mutex_lock(&r->mu);
  while (r->unacked >= MAX_UNACKED && !r->closed) pthread_cond_wait(&r->cv, &r->mu);
  pthread_mutex_unlock(&r->mu);
}

/* Makes room for a whole message of `need` bytes (prefix included) at the end of out. */
static int reserve(Reader *r, size_t need) {
  if (r->out && r->out_cap - r->out_len >= need) return 1;
  deliver(r);
  if (r->error[0]) return 0;
  r->out_cap = need > CHUNK ? need : CHUNK;
  r->out = malloc(r->out_cap);
  if (!r->out) {
    fail(r, "out of memory");
    return 0;
  }
  return 1;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *p, size_t n,
                   void *u) {
  (void)s, (void)flags;
  Reader *r = u;
  if (id != r->stream_id || r->error[0]) return 0;
  while (n > 0) {
    if (r->msg_left == 0) {
      size_t take = 5 - r->prefix_have < n ? 5 - r->prefix_have : n;
      memcpy(r->prefix + r->prefix_have, p, take);
      r->prefix_have += take, p += take, n -= take;
      if (r->prefix_have < 5) return 0;
      uint32_t len = (uint32_t)r->prefix[1] << 24 | (uint32_t)r->prefix[2] << 16 |
                     (uint32_t)r->prefix[3] << 8 | r->prefix[4];
      if (r->prefix[0] != 0) fail(r, "compressed message (none was asked for)");
      else if (len > MAX_MESSAGE) fail(r, "message larger than 128 MiB");
      if (r->error[0] || !reserve(r, 5 + (size_t)len)) return NGHTTP2_ERR_CALLBACK_FAILURE;
      memcpy(r->out + r->out_len, r->prefix, 5);
      r->out_len += 5;
      r->prefix_have = 0;
      r->msg_left = len;
      continue;
    }
    size_t take = r->msg_left < n ? r->msg_left : n;
    memcpy(r->out + r->out_len, p, take);
    r->out_len += take, r->msg_left -= take, p += take, n -= take;
  }
  return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *u) {
  (void)s, (void)flags;
  Reader *r = u;
  if (f->hd.stream_id != r->stream_id) return 0;
  if (r->hdrs_len + nl + vl + 2 > MAX_HEADER_BYTES) {
    fail(r, "response headers over 64 KiB");
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  char *h = realloc(r->hdrs, r->hdrs_len + nl + vl + 2);
  if (!h) return NGHTTP2_ERR_CALLBACK_FAILURE;
  r->hdrs = h;
  memcpy(h + r->hdrs_len, name, nl);
  h[r->hdrs_len + nl] = 0;
  memcpy(h + r->hdrs_len + nl + 1, value, vl);
  h[r->hdrs_len + nl + 1 + vl] = 0;
  r->hdrs_len += nl + vl + 2;
  return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t code, void *u) {
  (void)s;
  Reader *r = u;
  if (id != r->stream_id) return 0;
  r->stream_closed = 1;
  r->rst = code;
  return 0;
}

static ssize_t send_cb(nghttp2_session *s, const uint8_t *p, size_t n, int flags, void *u) {
  (void)s, (void)flags;
  Reader *r = u;
  ssize_t w = send(r->fd, p, n, MSG_NOSIGNAL);
  if (w < 0) return errno == EINTR ? NGHTTP2_ERR_WOULDBLOCK : NGHTTP2_ERR_CALLBACK_FAILURE;
  return w;
}

static ssize_t body_cb(nghttp2_session *s, int32_t id, uint8_t *buf, size_t n,
                             uint32_t *flags, nghttp2_data_source *src, void *u) {
  (void)s, (void)id, (void)src;
  Reader *r = u;
  size_t left = r->body_len - r->body_sent;
  size_t take = left < n ? left : n;
  memcpy(buf, r->body + r->body_sent, take);
  r->body_sent += take;
  if (r->body_sent == r->body_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)take;
}

static int dial(const char *target) {
  if (strncmp(target, "unix:", 5) == 0) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(target + 5) >= sizeof a.sun_path) return -1;
    strcpy(a.sun_path, target + 5);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
    if (fd >= 0) close(fd);
    return -1;
  }
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
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
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

/* The call, start to end; errors land in r->error. */
static void run(Reader *r) {
  int fd = dial(r->target);
  pthread_mutex_lock(&r->mu);
  r->fd = fd;
  int closed = r->closed;
  pthread_mutex_unlock(&r->mu);
  if (fd < 0) return fail(r, closed ? "closed" : "cannot connect");
  if (closed) return fail(r, "closed");
  nghttp2_session_callbacks *cb;
  nghttp2_session *s = NULL;
  if (nghttp2_session_callbacks_new(&cb) != 0) return fail(r, "out of memory");
  nghttp2_session_callbacks_set_send_callback(cb, send_cb);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
  int rv = nghttp2_session_client_new(&s, cb, r);
  nghttp2_session_callbacks_del(cb);
  if (rv != 0) return fail(r, "out of memory");
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                 {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, WINDOW}};
  nghttp2_data_provider prd = {.read_callback = body_cb};
  if (nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
      nghttp2_session_set_local_window_size(s, NGHTTP2_FLAG_NONE, 0, WINDOW) != 0 ||
      (r->stream_id = nghttp2_submit_request(s, NULL, r->nva, r->nvlen, &prd, r)) < 0) {
    nghttp2_session_del(s);
    return fail(r, "cannot start the call");
  }
  size_t cap = 1u << 20;
  uint8_t *buf = malloc(cap);
  if (!buf) fail(r, "out of memory");
  while (!r->error[0] && !r->stream_closed) {
    if (nghttp2_session_send(s) != 0) {
      fail(r, is_closed(r) ? "closed" : "connection lost");
      break;
    }
    ssize_t n = recv(fd, buf, cap, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      /* Nothing more for now: hand over what is whole, then wait. */
      if (r->msg_left == 0 && r->prefix_have == 0) deliver(r);
      if (r->error[0]) break;
      n = recv(fd, buf, cap, 0);
    }
    if (is_closed(r)) {
      fail(r, "closed");
      break;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      fail(r, "connection lost");
      break;
    }
    if (nghttp2_session_mem_recv(s, buf, (size_t)n) < 0) fail(r, "protocol error");
  }
  if (!r->error[0] && r->msg_left == 0 && r->prefix_have == 0) deliver(r);
  else if (!r->error[0]) fail(r, "stream ended inside a message");
  free(buf);
  nghttp2_session_del(s);
}

void *h2r_thread(void *arg) {
  Reader *r = arg;
  run(r);
  pthread_mutex_lock(&r->mu);
  if (r->fd >= 0) close(r->fd);
  r->fd = -1;
  pthread_mutex_unlock(&r->mu);
  Event *ev = calloc(1, sizeof *ev);
  if (ev) {
    ev->end = 1;
    if (r->emit(r, ev) != 0) free(ev);
  }
  r->done(r);
  return NULL;
}

void h2r_ack(Reader *r) {
  pthread_mutex_lock(&r->mu);
  if (r->unacked > 0) r->unacked--;
  pthread_cond_signal(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

void h2r_close(Reader *r) {
  pthread_mutex_lock(&r->mu);
  r->closed = 1;
  if (r->fd >= 0) shutdown(r->fd, SHUT_RDWR);
  pthread_cond_signal(&r->cv);
  pthread_mutex_unlock(&r->mu);
}
