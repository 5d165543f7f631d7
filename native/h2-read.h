/*
 * The receiver of taskrouter-h2read.node: one server-streaming gRPC call over
 * plaintext HTTP/2, received on a thread of its own (native/h2-read.c), handed
 * to its binding (native/h2-read-napi.c, which documents the JS protocol) as
 * chunks of whole gRPC messages and one end.
 *
 * Connections (dial, HTTP/2 session, idle ones kept): native/h2-conn.c.
 *
 * Contract between the two:
 *   - The binding fills a Reader from h2r_new() (target, nva, body, emit,
 *     done, binding) and starts h2r_thread(r) on a new thread; the Reader
 *     then holds three references: the binding's two (its handle, its
 *     thread-safe function) and the thread's, dropped when it returns.
 *   - The thread calls r->emit(r, ev) for each chunk (ev->data, malloc'd,
 *     now the binding's) and once for the end (ev->end: r->hdrs, r->error,
 *     r->rst are final by then), then r->done(r). emit returns 0 when the
 *     event was taken (the binding frees it), non-zero when it was not.
 *   - h2r_ack() (a chunk was consumed) and h2r_close() (end the call) may be
 *     called from any thread, any number of times, also after the end.
 *   - h2r_unref() drops one reference; the last frees the Reader.
 */
#ifndef H2_READ_H
#define H2_READ_H
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define CHUNK (4u << 20)
#define MAX_MESSAGE (128u << 20)
#define MAX_UNACKED 2
#define WINDOW (16 << 20)
#define MAX_HEADER_BYTES (64u << 10)
#define MAX_BODY (1u << 20)

typedef struct Event {
  int end;
  uint8_t *data;
  size_t len;
} Event;

typedef struct Reader Reader;
struct Reader {
  int (*emit)(Reader *r, Event *ev);
  void (*done)(Reader *r);
  void *binding;   /* the binding's (its thread-safe function) */
  pthread_t thread;
  int env_gone;    /* the binding's environment is being torn down (guarded by mu) */
  int joined;      /* the thread was joined (or never started); the binding's JS thread only */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int fd;          /* guarded by mu once the thread runs */
  int closed;      /* close() was called (guarded by mu) */
  int unacked;     /* guarded by mu */
  atomic_int refs; /* the JS handle and the thread */
  char *target;
  nghttp2_nv *nva;
  size_t nvlen;
  uint8_t *body;
  size_t body_len, body_sent;
  int32_t stream_id;
  int stream_closed;
  uint32_t rst;
  size_t delivered; /* chunks handed over */
  char error[200];
  /* Response header fields, "name\0value\0" pairs. */
  char *hdrs;
  size_t hdrs_len;
  /* gRPC framing of the response. */
  uint8_t prefix[5];
  size_t prefix_have;
  size_t msg_left; /* bytes of the current message still to come (0: at a prefix) */
  uint8_t *out;
  size_t out_len, out_cap;
};

/* A connection and its HTTP/2 session (native/h2-conn.c). */
typedef struct Conn Conn;
struct Conn {
  int fd;
  nghttp2_session *s;
  char *target;
  long idle_since; /* seconds, monotonic */
  void *user;      /* the call's Reader; NULL while idle (the session's user data is the Conn) */
  Conn *next;
};
Conn *h2r_conn_get(const char *target, void *user, nghttp2_session_callbacks *cb, int *reused,
                   int (*cancelled)(void *));
void h2r_conn_put(Conn *c);
void h2r_conn_drop(Conn *c);

/* A Reader with one reference, or NULL when out of memory. */
Reader *h2r_new(void);
void h2r_unref(Reader *r);
void *h2r_thread(void *r);
void h2r_ack(Reader *r);
void h2r_close(Reader *r);
#endif
