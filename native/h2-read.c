/*
 * The receiver of taskrouter-h2read.node (the contract with its binding:
 * native/h2-read.h; the JS protocol: native/h2-read-napi.c). On its thread:
 * take a connection to the target (a kept idle one or a new one:
 * native/h2-conn.c), speak HTTP/2 as a client (libnghttp2: framing, HPACK,
 * flow control), send the request with END_STREAM, then read the socket in
 * up to 1 MiB reads and cut the response
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
 * Only a connection whose call ended clean (no error, no reset) is kept for
 * the next call; one closed by close() never is. A kept connection that fails
 * before any byte of the answer came (the server closed it meanwhile) is
 * dropped and the call made again on a new one: nothing was received, so
 * nothing is lost or repeated.
 */
#define _GNU_SOURCE
#include "h2-read.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

static int cancelled(void *r) {
  return is_closed(r);
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
  r->delivered++;
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
  Reader *r = ((Conn *)u)->user; /* NULL while the connection is idle */
  if (!r) return 0;
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
  Reader *r = ((Conn *)u)->user; /* NULL while the connection is idle */
  if (!r) return 0;
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
  Reader *r = ((Conn *)u)->user; /* NULL while the connection is idle */
  if (!r) return 0;
  if (id != r->stream_id) return 0;
  r->stream_closed = 1;
  r->rst = code;
  return 0;
}

static ssize_t send_cb(nghttp2_session *s, const uint8_t *p, size_t n, int flags, void *u) {
  (void)s, (void)flags;
  Conn *c = u;
  /* An idle connection's frames (PING ACKs) never wait: the watcher holds the pool's lock. */
  ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL | (c->user ? 0 : MSG_DONTWAIT));
  if (w < 0) return errno == EINTR ? NGHTTP2_ERR_WOULDBLOCK : NGHTTP2_ERR_CALLBACK_FAILURE;
  return w;
}

static ssize_t body_cb(nghttp2_session *s, int32_t id, uint8_t *buf, size_t n,
                             uint32_t *flags, nghttp2_data_source *src, void *u) {
  (void)s, (void)id, (void)u;
  Reader *r = src->ptr;
  size_t left = r->body_len - r->body_sent;
  size_t take = left < n ? left : n;
  memcpy(buf, r->body + r->body_sent, take);
  r->body_sent += take;
  if (r->body_sent == r->body_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)take;
}

static nghttp2_session_callbacks *callbacks;
static pthread_once_t callbacks_once = PTHREAD_ONCE_INIT;

static void make_callbacks(void) {
  if (nghttp2_session_callbacks_new(&callbacks) != 0) return;
  nghttp2_session_callbacks_set_send_callback(callbacks, send_cb);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data);
  nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_close);
}

/* The call on connection c, from the request to the stream's end. */
static void call(Reader *r, Conn *c, uint8_t *buf, size_t cap) {
  nghttp2_data_provider prd = {.source.ptr = r, .read_callback = body_cb};
  if ((r->stream_id = nghttp2_submit_request(c->s, NULL, r->nva, r->nvlen, &prd, r)) < 0)
    return fail(r, "cannot start the call");
  while (!r->error[0] && !r->stream_closed) {
    if (nghttp2_session_send(c->s) != 0) {
      fail(r, is_closed(r) ? "closed" : "connection lost");
      break;
    }
    ssize_t n = recv(c->fd, buf, cap, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      /* Nothing more for now: hand over what is whole, then wait. */
      if (r->msg_left == 0 && r->prefix_have == 0) deliver(r);
      if (r->error[0]) break;
      n = recv(c->fd, buf, cap, 0);
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
    if (nghttp2_session_mem_recv(c->s, buf, (size_t)n) < 0) fail(r, "protocol error");
  }
  if (!r->error[0] && r->msg_left == 0 && r->prefix_have == 0) deliver(r);
  else if (!r->error[0]) fail(r, "stream ended inside a message");
}

/* Makes c the call's connection (close() shuts it down), or NULL after close(). */
static int attach(Reader *r, Conn *c) {
  pthread_mutex_lock(&r->mu);
  int closed = r->closed;
  r->fd = closed || !c ? -1 : c->fd;
  pthread_mutex_unlock(&r->mu);
  return !closed;
}

/* The call, start to end; errors land in r->error. A kept connection that
 * fails before any byte of the answer came is dropped and the call redialled. */
static void run(Reader *r) {
  pthread_once(&callbacks_once, make_callbacks);
  size_t cap = 1u << 20;
  uint8_t *buf = malloc(cap);
  if (!callbacks || !buf) {
    free(buf);
    return fail(r, "out of memory");
  }
  int reused = 0;
  Conn *c = NULL;
  for (;;) {
    c = h2r_conn_get(r->target, r, callbacks, &reused, cancelled);
    if (!attach(r, c)) {
      fail(r, "closed");
      break;
    }
    if (!c) {
      fail(r, "cannot connect");
      break;
    }
    call(r, c, buf, cap);
    int nothing_came = r->hdrs_len == 0 && r->delivered == 0 && r->out_len == 0;
    if (!(reused && nothing_came && (r->error[0] || r->rst) && !is_closed(r))) break;
    attach(r, NULL);
    h2r_conn_drop(c);
    c = NULL;
    r->error[0] = 0, r->rst = 0, r->stream_closed = 0, r->body_sent = 0;
    r->prefix_have = 0, r->msg_left = 0;
  }
  attach(r, NULL);
  int clean = c && !r->error[0] && r->stream_closed && r->rst == 0 && !is_closed(r);
  /* Frames the last read queued (WINDOW_UPDATE, PING ACK) go out before it idles. */
  if (clean && nghttp2_session_send(c->s) == 0 && nghttp2_session_want_read(c->s))
    h2r_conn_put(c);
  else h2r_conn_drop(c);
  free(buf);
}

void *h2r_thread(void *arg) {
  Reader *r = arg;
  run(r);
  Event *ev = calloc(1, sizeof *ev);
  if (ev) {
    ev->end = 1;
    if (r->emit(r, ev) != 0) free(ev);
  }
  r->done(r);
  h2r_unref(r);
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
