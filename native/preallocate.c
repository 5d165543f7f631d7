/*
 * taskrouter-preallocate.node: a Node-API addon giving Node fallocate(2),
 * which libuv does not wrap.
 *
 * Protocol (the whole interface):
 *   allocate(fd, length) -> number
 *     `fd` an open file descriptor and `length` a byte count, both integers
 *     in [0, 2^53); anything else throws a TypeError and changes nothing.
 *     Allocates the file's blocks for bytes [0, length) (fallocate mode 0:
 *     the size becomes at least `length`, new bytes read as zeros) and
 *     returns 0, or the errno of the refusal (EOPNOTSUPP: a filesystem
 *     without it; ENOSPC; EBADF...).
 *
 * Why (docs/DECISIONS.md, "Blocks allocated ahead of a file's bytes"): ext4
 * delays allocating the blocks of written data, and a file renamed over an
 * existing one with such blocks is written back inside rename(2)
 * (auto_da_alloc): 165 ms for the 256 MiB file of a `taskrouter cp`
 * download, measured. With its blocks allocated before the bytes are
 * written, the rename only frees the old file.
 *
 * Built by native/build.sh when Node's headers (node_api.h) are found; without
 * it the CLI writes without preallocating.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdint.h>

#define MAX_SAFE 9007199254740991.0 /* 2^53 - 1 */

static int whole(napi_env env, napi_value v, int64_t *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) return 0;
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) return 0;
  if (!(d >= 0 && d <= MAX_SAFE) || d != (double)(int64_t)d) return 0;
  *out = (int64_t)d;
  return 1;
}

static napi_value allocate(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  int64_t fd, length;
  if (argc < 2 || !whole(env, argv[0], &fd) || fd > INT32_MAX || !whole(env, argv[1], &length)) {
    napi_throw_type_error(env, NULL, "allocate(fd, length): integers in [0, 2^53)");
    return NULL;
  }
  int err = length == 0 || fallocate((int)fd, 0, 0, (off_t)length) == 0 ? 0 : errno;
  napi_value result;
  if (napi_create_int32(env, err, &result) != napi_ok) return NULL;
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "allocate", NAPI_AUTO_LENGTH, allocate, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "allocate", fn) != napi_ok) return NULL;
  return exports;
}
