/*
 * taskrouter-exchange.node: a Node-API addon giving Node renameat2's
 * RENAME_EXCHANGE, which libuv does not wrap.
 *
 * Protocol (the whole interface):
 *   exchange(a, b) -> number
 *     `a` and `b` are path strings (at most PATH_MAX bytes, no NUL);
 *     anything else throws a TypeError and changes nothing. Atomically
 *     swaps the two names (both must exist, on one filesystem) and returns
 *     0, or returns the errno of the refusal (then nothing changed): ENOENT,
 *     EXDEV, EINVAL (a filesystem or kernel without the flag), ...
 *
 * Why (docs/DECISIONS.md, "Replacing a file without ext4's flush"): a file
 * renamed over an existing one makes ext4 start writeback of the whole new
 * file inside rename(2) (auto_da_alloc): 165 ms for the 256 MiB file of a
 * `taskrouter cp` download, measured. Exchanged with the old file, whose
 * content is then unlinked, the same replacement is as atomic and costs
 * the unlink alone (56 ms).
 *
 * Built by native/build.sh when Node's headers (node_api.h) are found; without
 * it the CLI renames.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <node_api.h>
#include <stdio.h>
#include <string.h>

static int path_arg(napi_env env, napi_value v, char *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) return 0;
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok || len == 0 || len >= PATH_MAX) return 0;
  if (napi_get_value_string_utf8(env, v, out, PATH_MAX, &len) != napi_ok) return 0;
  return strlen(out) == len; /* no NUL inside */
}

static napi_value exchange(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  static char a[PATH_MAX], b[PATH_MAX];
  if (argc < 2 || !path_arg(env, argv[0], a) || !path_arg(env, argv[1], b)) {
    napi_throw_type_error(env, NULL, "exchange(a, b): two non-empty paths");
    return NULL;
  }
  int err = renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) == 0 ? 0 : errno;
  napi_value result;
  if (napi_create_int32(env, err, &result) != napi_ok) return NULL;
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "exchange", NAPI_AUTO_LENGTH, exchange, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "exchange", fn) != napi_ok) return NULL;
  return exports;
}
