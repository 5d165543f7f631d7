/*
 * taskrouter-h2read.node: a Node-API addon that receives one server-streaming
 * gRPC call (the client's bulk output reads: TaskExecStdioRead) on a thread of
 * its own, so Node's event loop sees one event per few MiB instead of one per
 * 16 KiB HTTP/2 frame (docs/DECISIONS.md, "Bulk reads off the event loop").
 * This file is the binding; the receiver is native/h2-read.c, its connections
 * native/h2-conn.c (its own, not Node's: a call's connection is kept for the
 * next call to the same target when the call ended clean, up to 4 idle for
 * up to 60 s).
 *
 * Protocol (the whole interface):
 *   open(target, headers, body, onEvent) -> handle
 *     target   "host:port" or "[v6addr]:port" (plaintext HTTP/2 over TCP only)
 *     headers  string[]: name, value, name, value... (at most 128 pairs,
 *              pseudo-headers first, as sent; :authority included)
 *     body     Uint8Array of at most 1 MiB: the request's gRPC frames (sent
 *              whole, then END_STREAM)
 *     onEvent  called on the JS thread:
 *       onEvent("data", ArrayBuffer)  one or more whole gRPC messages, each
 *         [flag u8][length u32 big-endian][message]; flag is always 0 (a
 *         compressed message ends the call with an error instead). A chunk is
 *         delivered when the next message does not fit its 4 MiB (a message
 *         larger than that gets a chunk of its own) or when the socket has
 *         nothing more for now and the chunk ends on a message boundary.
 *       onEvent("end", [headers, error, rst]) exactly once, last:
 *         headers  string[] name, value... of every HEADERS frame received
 *                  (response headers and trailers)
 *         error    null, or why the call ended without a clean stream close:
 *                  "cannot connect", "connection lost", "closed" (close()),
 *                  "message larger than 128 MiB", or another description
 *                  (a protocol error, a compressed message, a stream that
 *                  ended inside a message, headers over 64 KiB, no memory)
 *         rst      the HTTP/2 error code the stream closed with (0: none)
 *     Throws a TypeError for bad arguments, and starts nothing then.
 *   ack(handle)  the caller is done with one "data" chunk. At most 2 chunks are
 *     unacknowledged: then the thread stops reading the socket, and TCP and the
 *     server's HTTP/2 flow control hold the server back (backpressure).
 *   close(handle)  ends the call early (the socket is shut down); "end" still
 *     comes, with error "closed". Idempotent; harmless after the end.
 *   While a call runs, its thread-safe function keeps Node's event loop alive.
 *
 * Memory: a chunk's bytes are malloc'd and owned by its ArrayBuffer (freed
 * when collected). libnghttp2 is linked from the system (Debian:
 * libnghttp2-dev); Node exports the copy it carries, and the dynamic linker
 * binds the addon's calls to the first definition (its API is stable).
 */
#include "h2-read.h"
#include <node_api.h>
#include <stdlib.h>
#include <string.h>

static void free_chunk(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  free(data);
}

/* On the JS thread: turns an Event into onEvent(kind, value). */
static void call_js(napi_env env, napi_value fn, void *ctx, void *data) {
  Reader *r = ctx;
  Event *ev = data;
  if (!env) {
    if (!ev->end) free(ev->data);
    free(ev);
    return;
  }
  napi_value args[2], undef;
  napi_get_undefined(env, &undef);
  if (!ev->end) {
    napi_create_string_utf8(env, "data", NAPI_AUTO_LENGTH, &args[0]);
    if (napi_create_external_arraybuffer(env, ev->data, ev->len, free_chunk, NULL, &args[1]) !=
        napi_ok) {
      /* A runtime that refuses external memory (a V8 sandbox) gets a copy; without
       * even that the call is closed: JS sees it end early and resumes from the
       * bytes it has, so nothing is skipped. */
      void *copy = NULL;
      int ok = napi_create_arraybuffer(env, ev->len, &copy, &args[1]) == napi_ok;
      if (ok) memcpy(copy, ev->data, ev->len);
      free(ev->data);
      free(ev);
      if (!ok) {
        h2r_close(r);
        return;
      }
      ev = NULL;
    }
  } else {
    napi_value list, err, rst;
    napi_create_string_utf8(env, "end", NAPI_AUTO_LENGTH, &args[0]);
    napi_create_array(env, &list);
    uint32_t i = 0;
    for (size_t at = 0; at < r->hdrs_len; i++) {
      napi_value v;
      size_t l = strlen(r->hdrs + at);
      napi_create_string_utf8(env, r->hdrs + at, l, &v);
      napi_set_element(env, list, i, v);
      at += l + 1;
    }
    if (r->error[0]) napi_create_string_utf8(env, r->error, NAPI_AUTO_LENGTH, &err);
    else napi_get_null(env, &err);
    napi_create_uint32(env, r->rst, &rst);
    napi_create_array_with_length(env, 3, &args[1]);
    napi_set_element(env, args[1], 0, list);
    napi_set_element(env, args[1], 1, err);
    napi_set_element(env, args[1], 2, rst);
  }
  free(ev);
  napi_call_function(env, undef, fn, 2, args, NULL);
}

/* The thread's calls of the thread-safe function: none once the environment goes. */
static int emit(Reader *r, Event *ev) {
  pthread_mutex_lock(&r->mu);
  int taken = !r->env_gone &&
              napi_call_threadsafe_function(r->binding, ev, napi_tsfn_nonblocking) == napi_ok;
  pthread_mutex_unlock(&r->mu);
  return !taken;
}

static void done(Reader *r) {
  pthread_mutex_lock(&r->mu);
  if (!r->env_gone) napi_release_threadsafe_function(r->binding, napi_tsfn_release);
  pthread_mutex_unlock(&r->mu);
}

/* The environment is torn down (a Worker ends): stop the thread and wait for it, before
 * Node deletes the thread-safe function (hooks run last-registered first, and this one
 * is registered after the function). */
static void teardown(void *arg) {
  Reader *r = arg;
  pthread_mutex_lock(&r->mu);
  r->env_gone = 1;
  pthread_mutex_unlock(&r->mu);
  h2r_close(r);
  if (!r->joined) pthread_join(r->thread, NULL);
  r->joined = 1;
}

static void tsfn_gone(napi_env env, void *data, void *hint) {
  (void)hint;
  Reader *r = data;
  napi_remove_env_cleanup_hook(env, teardown, r);
  if (!r->joined) pthread_join(r->thread, NULL); /* it released the function: returning now */
  r->joined = 1;
  h2r_unref(r);
}

static void handle_gone(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  h2r_unref(data);
}

static Reader *handle_of(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *p = NULL;
  napi_valuetype t;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_typeof(env, argv[0], &t) != napi_ok || t != napi_external ||
      napi_get_value_external(env, argv[0], &p) != napi_ok || !p) {
    napi_throw_type_error(env, NULL, "expected a handle from open()");
    return NULL;
  }
  return p;
}

static napi_value ack(napi_env env, napi_callback_info info) {
  Reader *r = handle_of(env, info);
  if (r) h2r_ack(r);
  return NULL;
}

static napi_value close_reader(napi_env env, napi_callback_info info) {
  Reader *r = handle_of(env, info);
  if (r) h2r_close(r);
  return NULL;
}

static char *string_arg(napi_env env, napi_value v, size_t *len) {
  size_t n;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok) return NULL;
  char *s = malloc(n + 1);
  if (s) napi_get_value_string_utf8(env, v, s, n + 1, &n);
  if (len) *len = n;
  return s;
}

static napi_value open_reader(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  bool is_array = false, is_typed = false;
  napi_valuetype ft;
  uint32_t nh = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4 || napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[1], &nh) != napi_ok || nh % 2 || nh > 256 ||
      napi_is_typedarray(env, argv[2], &is_typed) != napi_ok || !is_typed ||
      napi_typeof(env, argv[3], &ft) != napi_ok || ft != napi_function) {
    napi_throw_type_error(env, NULL, "open(target, headers[], body, onEvent)");
    return NULL;
  }
  Reader *r = h2r_new();
  if (!r) goto oom;
  r->emit = emit;
  r->done = done;
  r->nva = calloc(nh / 2 + 1, sizeof *r->nva);
  r->target = string_arg(env, argv[0], NULL);
  if (!r->nva || !r->target) goto bad;
  for (uint32_t i = 0; i < nh; i += 2) {
    napi_value k, v;
    nghttp2_nv *nv = &r->nva[r->nvlen++];
    napi_get_element(env, argv[1], i, &k);
    napi_get_element(env, argv[1], i + 1, &v);
    nv->name = (uint8_t *)string_arg(env, k, &nv->namelen);
    nv->value = (uint8_t *)string_arg(env, v, &nv->valuelen);
    if (!nv->name || !nv->value) goto bad;
  }
  napi_typedarray_type tt;
  size_t blen;
  void *bdata;
  napi_get_typedarray_info(env, argv[2], &tt, &blen, &bdata, NULL, NULL);
  if (tt != napi_uint8_array || blen > MAX_BODY) goto bad;
  r->body = malloc(blen ? blen : 1);
  if (!r->body) goto bad;
  memcpy(r->body, bdata, blen);
  r->body_len = blen;
  napi_value name;
  napi_create_string_utf8(env, "taskrouter-h2read", NAPI_AUTO_LENGTH, &name);
  napi_threadsafe_function tsfn;
  if (napi_create_threadsafe_function(env, argv[3], NULL, name, 0, 1, r, tsfn_gone, r, call_js,
                                      &tsfn) != napi_ok)
    goto bad;
  r->binding = tsfn;
  atomic_store(&r->refs, 3);
  if (pthread_create(&r->thread, NULL, h2r_thread, r) != 0) {
    r->joined = 1;
    atomic_store(&r->refs, 2);
    napi_release_threadsafe_function(tsfn, napi_tsfn_abort); /* tsfn_gone: one unref */
    goto bad;
  }
  napi_add_env_cleanup_hook(env, teardown, r);
  napi_value handle;
  napi_create_external(env, r, handle_gone, NULL, &handle);
  return handle;
bad:
  if (r) h2r_unref(r);
  napi_throw_type_error(env, NULL, "open(target, headers[], body, onEvent): bad argument");
  return NULL;
oom:
  napi_throw_error(env, NULL, "open: out of memory");
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"open", NULL, open_reader, NULL, NULL, NULL, napi_default, NULL},
      {"ack", NULL, ack, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, close_reader, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, 3, props) != napi_ok) return NULL;
  return exports;
}
