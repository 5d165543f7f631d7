/*
 * taskrouter-aligned.node: a Node-API addon giving Node memory that starts on
 * a page boundary, which O_DIRECT writes need and no Node API promises.
 *
 * Protocol (the whole interface):
 *   aligned(length) -> ArrayBuffer
 *     `length` an integer multiple of 4096 in [4096, 256 MiB]; anything else
 *     throws a TypeError and allocates nothing. Returns a new ArrayBuffer of
 *     `length` bytes whose first byte is at an address divisible by 4096
 *     (posix_memalign; its contents are unspecified). The memory is freed
 *     when the ArrayBuffer is collected. Throws an Error when the memory
 *     cannot be had.
 *
 * Why (docs/DECISIONS.md, "Downloads written around the page cache"): a new
 * 256 MiB file written through the page cache costs 0.6-0.75 s on this VM
 * (its pages come from memory the host took back), 0.17-0.2 s written with
 * O_DIRECT from a reused buffer; O_DIRECT takes only aligned memory.
 *
 * Built by native/build.sh when Node's headers (node_api.h) are found; without
 * it `taskrouter cp` writes downloads through the page cache.
 */
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>

#define ALIGN 4096
#define MAX_LENGTH (256.0 * 1024 * 1024)

static void release(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  free(data);
}

static napi_value aligned(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  napi_valuetype t;
  double d = 0;
  if (argc < 1 || napi_typeof(env, argv[0], &t) != napi_ok || t != napi_number ||
      napi_get_value_double(env, argv[0], &d) != napi_ok || !(d >= ALIGN && d <= MAX_LENGTH) ||
      d != (double)(int64_t)d || (int64_t)d % ALIGN != 0) {
    napi_throw_type_error(env, NULL, "aligned(length): a multiple of 4096 in [4096, 256 MiB]");
    return NULL;
  }
  void *mem = NULL;
  if (posix_memalign(&mem, ALIGN, (size_t)d) != 0) {
    napi_throw_error(env, NULL, "aligned(length): out of memory");
    return NULL;
  }
  napi_value buf;
  if (napi_create_external_arraybuffer(env, mem, (size_t)d, release, NULL, &buf) != napi_ok) {
    free(mem);
    napi_throw_error(env, NULL, "aligned(length): external memory refused by this Node");
    return NULL;
  }
  return buf;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "aligned", NAPI_AUTO_LENGTH, aligned, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "aligned", fn) != napi_ok) return NULL;
  return exports;
}
