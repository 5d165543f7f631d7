/*
 * taskrouter-malloc.node: a Node-API addon that sets glibc malloc's trim,
 * top-pad and mmap thresholds of the process that loads it (the router).
 *
 * Protocol (the whole interface):
 *   tune(trimThreshold, topPad, mmapThreshold) -> boolean
 *     Each argument is a byte count, an integer in [0, 2^31 - 1]; anything
 *     else throws a TypeError and changes nothing. Calls
 *     mallopt(M_TRIM_THRESHOLD), mallopt(M_TOP_PAD) and
 *     mallopt(M_MMAP_THRESHOLD) in that order and returns true when glibc
 *     accepted all three. Setting any of them turns off glibc's dynamic
 *     thresholds.
 *
 * Why (docs/DECISIONS.md, "Stdin without copies on either side"): Node's HTTP/2
 * reads every socket chunk into a fresh 64 KiB buffer, and V8 frees those
 * buffers in batches at each collection. With glibc's defaults the freed top
 * of the heap goes back to the kernel every time, so the next reads fault
 * in and zero fresh pages: half of the router's CPU while it receives stdin.
 * Kept (up to the trim threshold), the same pages serve again.
 *
 * Built by native/build.sh when Node's headers (node_api.h) are found; the
 * router runs with glibc's defaults, and says so, without it.
 */
#include <limits.h>
#include <malloc.h>
#include <node_api.h>
#include <stdint.h>

static int byte_count(napi_env env, napi_value v, int *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) return 0;
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) return 0;
  if (!(d >= 0 && d <= INT_MAX) || d != (double)(int64_t)d) return 0;
  *out = (int)d;
  return 1;
}

static napi_value tune(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  int v[3];
  for (size_t i = 0; i < 3; i++) {
    if (i >= argc || !byte_count(env, argv[i], &v[i])) {
      napi_throw_type_error(env, NULL, "tune(trimThreshold, topPad, mmapThreshold): byte counts in [0, 2^31 - 1]");
      return NULL;
    }
  }
  int ok = mallopt(M_TRIM_THRESHOLD, v[0]);
  ok = mallopt(M_TOP_PAD, v[1]) && ok;
  ok = mallopt(M_MMAP_THRESHOLD, v[2]) && ok;
  napi_value result;
  if (napi_get_boolean(env, ok != 0, &result) != napi_ok) return NULL;
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "tune", NAPI_AUTO_LENGTH, tune, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "tune", fn) != napi_ok) return NULL;
  return exports;
}
