/*
 * modal-sandbox-fs-tools: the filesystem helper Modal's SDKs exec in a task
 * to implement `sandbox.filesystem`. taskrouter places it read-only at
 * /__modal/.bin/modal-sandbox-fs-tools in every container; it is linked
 * statically and needs nothing from the image (no shell, libc or NSS: user
 * and group names come from the container's /etc/passwd and /etc/group, read
 * here by hand). The contract, with the SDK behaviour behind every rule, is
 * FS-TOOLS.md (../shared/FS-TOOLS.md beside the repository). In brief:
 *
 *   modal-sandbox-fs-tools '{"<Command>":{"path":"/abs/path",...}}'
 *
 * - argv[1] is a JSON object with one key, the command: ListFiles, Stat,
 *   MakeDirectory (parents, default true), Remove (recursive, default false),
 *   ReadFile, WriteFile or Watch (recursive, filter, timeout_secs). Parsed by
 *   a small JSON parser here: any key order and spacing, \uXXXX escapes with
 *   surrogate pairs (a lone \udc80-\udcff is the raw byte, as Python's
 *   surrogateescape writes it), unknown fields ignored, null = default.
 * - Success: exit 0, stderr empty; stdout: ListFiles a JSON array of entries
 *   sorted by name (bytewise), Stat one entry, ReadFile the file's bytes,
 *   Watch one JSON line per event; nothing for the others. An entry is
 *   {"name","path","type","size","mode","permissions","owner","group",
 *   "modified_time","symlink_target"}. Output is valid UTF-8 JSON: bytes of
 *   names that are not UTF-8 become U+FFFD.
 * - Failure: exit 1; stderr exactly one JSON object
 *   {"version":1,"error_kind":"NotFound","message":"...","detail":"..."}.
 *   Messages never contain the path (the SDKs append it); errno translation
 *   per command as FS-TOOLS.md section 2 recommends; bad arguments give
 *   InvalidArgument.
 * - stdin is read only by WriteFile and Watch. WriteFile checks the target
 *   first (a directory, a parent that is not one: exit at once, stdin
 *   unread), stages the content in an unnamed file (O_TMPFILE, else a
 *   dot-file) in the target's directory and renames it over the target at
 *   stdin EOF only; SIGTERM, SIGINT or SIGHUP before EOF leave the target
 *   untouched and no temporary file. A replaced file of 8 MiB or more is
 *   let go by a child of its own (release_later) after the rename: the
 *   helper exits without waiting for the old blocks and pages to be freed.
 *   Watch (fs-tools-watch.c) stops with exit 0 at stdin EOF, at its timeout,
 *   on EPIPE and on SIGTERM/SIGINT.
 * - ReadFile refuses a file over 5 GiB (FileTooLarge) before any output (a
 *   lower limit in env TASKROUTER_FS_READ_LIMIT, set by the router, wins), and
 *   stops once more than that was read from a file whose size understated it.
 *   Data moves in 1 MiB steps, by sendfile/splice where the kernel can.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define READ_LIMIT 5368709120LL /* ReadFile's limit: 5 GiB */
#define CHUNK (1 << 20)

enum { LIST_FILES, STAT, MAKE_DIRECTORY, REMOVE, READ_FILE, WRITE_FILE, WATCH, N_COMMANDS };
static const char *const COMMANDS[N_COMMANDS] = {
    "ListFiles", "Stat", "MakeDirectory", "Remove", "ReadFile", "WriteFile", "Watch"};
static int command = -1;

/* Shared with fs-tools-watch.c (the other file declares them the same way). */
_Noreturn void fail_os(const char *op, int err);
_Noreturn void fail_kind(const char *kind, const char *message, const char *detail);
void out_raw(const char *s);
void out_json_str(const char *s);
void out_flush(void);
char *path_join(const char *dir, const char *name);
unsigned watch_kind(const char *name, size_t len);
void watch(const char *path, int recursive, unsigned filter, long long timeout_secs);

/* ---- output ---------------------------------------------------------- */

struct out {
  int fd;
  size_t len;
  char data[1 << 16];
};
static struct out out1 = {.fd = 1}, out2 = {.fd = 2};

/* write() all of it: EINTR retried, short writes continued, EAGAIN waited out. */
static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd pfd = {fd, POLLOUT, 0};
        poll(&pfd, 1, 100);
        continue;
      }
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static void flush_to(struct out *o) {
  if (o->len == 0) return;
  int r = write_all(o->fd, o->data, o->len);
  int err = errno;
  o->len = 0;
  if (r < 0 && o->fd == 1) {
    if (command == WATCH && err == EPIPE) _exit(0); /* the reader is gone: a normal end */
    fail_os("write to stdout", err);
  }
}

static void put(struct out *o, const void *p, size_t n) {
  while (n > 0) {
    if (o->len == sizeof o->data) flush_to(o);
    size_t k = sizeof o->data - o->len;
    if (k > n) k = n;
    memcpy(o->data + o->len, p, k);
    o->len += k;
    p = (const char *)p + k;
    n -= k;
  }
}

static void put_s(struct out *o, const char *s) { put(o, s, strlen(s)); }

/*
 * Length of the valid UTF-8 sequence at s, or minus the length of its
 * maximal invalid part (which becomes one U+FFFD, as Unicode recommends).
 */
static int utf8_seq(const unsigned char *s, size_t n) {
  unsigned c = s[0], lo = 0x80, hi = 0xBF;
  int need;
  if (c >= 0xC2 && c <= 0xDF) need = 1;
  else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F; /* no surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F; /* nothing above U+10FFFF */
  } else return -1;
  for (int k = 1; k <= need; k++) {
    if ((size_t)k >= n) return -k;
    unsigned d = s[k];
    if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF)) return -k;
  }
  return need + 1;
}

/* A JSON string: control characters escaped, non-ASCII raw, bad UTF-8 as U+FFFD. */
static void put_json_str(struct out *o, const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  put(o, "\"", 1);
  for (size_t i = 0; i < n;) {
    unsigned c = s[i];
    if (c >= 0x80) {
      int len = utf8_seq(s + i, n - i);
      if (len > 0) put(o, s + i, (size_t)len);
      else put(o, "\xEF\xBF\xBD", 3);
      i += (size_t)(len > 0 ? len : -len);
      continue;
    }
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\', esc[1] = (char)c;
      put(o, esc, 2);
    } else if (c < 0x20 || c == 0x7F) {
      const char *named = c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : NULL;
      if (named) put_s(o, named);
      else put(o, esc, (size_t)snprintf(esc, sizeof esc, "\\u%04x", c));
    } else put(o, s + i, 1);
    i++;
  }
  put(o, "\"", 1);
}

void out_raw(const char *s) { put_s(&out1, s); }
void out_json_str(const char *s) { put_json_str(&out1, s, strlen(s)); }
void out_flush(void) { flush_to(&out1); }

/* ---- errors ---------------------------------------------------------- */

/* WriteFile's named temporary file, deleted on any failure or signal. */
static volatile sig_atomic_t staged;
static char staged_path[PATH_MAX + 64];

_Noreturn void fail_kind(const char *kind, const char *message, const char *detail) {
  if (staged) unlink(staged_path);
  out1.len = 0; /* stdout is discarded on failure anyway */
  put_s(&out2, "{\"version\":1,\"error_kind\":");
  put_json_str(&out2, kind, strlen(kind));
  put_s(&out2, ",\"message\":");
  put_json_str(&out2, message, strlen(message));
  put_s(&out2, ",\"detail\":");
  put_json_str(&out2, detail, strlen(detail));
  put_s(&out2, "}\n");
  flush_to(&out2);
  _exit(1);
}

/* An OS error of `op`, translated for the running command (FS-TOOLS.md section 2). */
_Noreturn void fail_os(const char *op, int err) {
  const char *kind = NULL, *message = NULL;
  char detail[256], text[320];
  snprintf(detail, sizeof detail, "%s: %s (os error %d)", op, strerror(err), err);
  switch (err) {
  case ENOENT:
    kind = "NotFound", message = "no such file or directory";
    break;
  case ENOTDIR:
    if (command == READ_FILE || command == REMOVE || command == WATCH)
      kind = "NotFound", message = "no such file or directory (a component is not a directory)";
    else kind = "NotDirectory", message = "not a directory";
    break;
  case EACCES:
  case EPERM:
    kind = "PermissionDenied", message = "permission denied";
    break;
  case EROFS:
    kind = "PermissionDenied", message = "permission denied: read-only file system";
    break;
  case EISDIR:
    kind = "IsDirectory", message = "is a directory";
    break;
  case ENOTEMPTY:
    kind = "DirectoryNotEmpty", message = "directory not empty";
    break;
  case EEXIST:
    if (command == MAKE_DIRECTORY) kind = "PathAlreadyExists", message = "path already exists";
    if (command == REMOVE) kind = "DirectoryNotEmpty", message = "directory not empty";
    break;
  case EOPNOTSUPP:
  case ENOSYS:
    if (command == MAKE_DIRECTORY || command == REMOVE || command == WATCH)
      kind = "NotSupported", message = "operation not supported by this filesystem";
    break;
  }
  if (!kind) {
    snprintf(text, sizeof text, "%s failed: %s (os error %d)", op, strerror(err), err);
    kind = "Io", message = text;
  }
  fail_kind(kind, message, detail);
}

_Noreturn static void invalid(const char *message) {
  fail_kind("InvalidArgument", message,
            "usage: modal-sandbox-fs-tools '{\"<Command>\":{\"path\":\"/...\",...}}'");
}

/* ---- JSON input ------------------------------------------------------ */

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };
struct jv {
  enum jtype type;
  int boolean;
  double num;
  char *str; /* J_STR: the bytes (NUL-terminated too), len of them */
  size_t len;
  char *key; /* a member of an object: its key */
  size_t keylen;
  struct jv *first, *next; /* J_ARR, J_OBJ: elements or members, in order */
};
static const char *jstart, *jp, *jend;
static int jdepth;

_Noreturn static void bad_json(const char *what) {
  char m[160];
  snprintf(m, sizeof m, "malformed JSON argument: %s at offset %ld", what, (long)(jp - jstart));
  invalid(m);
}

static void jws(void) {
  while (jp < jend && (*jp == ' ' || *jp == '\t' || *jp == '\n' || *jp == '\r')) jp++;
}

static unsigned hex4(void) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++, jp++) {
    char c = jp < jend ? *jp : 0;
    int d = c >= '0' && c <= '9' ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : -1;
    if (d < 0) bad_json("bad \\u escape");
    v = v << 4 | (unsigned)d;
  }
  return v;
}

static char *put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) *o++ = (char)cp;
  else if (cp < 0x800) *o++ = (char)(0xC0 | cp >> 6), *o++ = (char)(0x80 | (cp & 0x3F));
  else if (cp < 0x10000)
    *o++ = (char)(0xE0 | cp >> 12), *o++ = (char)(0x80 | (cp >> 6 & 0x3F)),
    *o++ = (char)(0x80 | (cp & 0x3F));
  else
    *o++ = (char)(0xF0 | cp >> 18), *o++ = (char)(0x80 | (cp >> 12 & 0x3F)),
    *o++ = (char)(0x80 | (cp >> 6 & 0x3F)), *o++ = (char)(0x80 | (cp & 0x3F));
  return o;
}

/* At a '"': the decoded string (never longer than its JSON text). */
static void jstring(char **out, size_t *outlen) {
  const char *q = ++jp;
  while (q < jend && *q != '"') q += *q == '\\' ? 2 : 1;
  if (q >= jend) bad_json("unterminated string");
  char *buf = malloc((size_t)(q - jp) + 1), *o = buf;
  if (!buf) fail_os("malloc", ENOMEM);
  while (*jp != '"') {
    unsigned char c = (unsigned char)*jp++;
    if (c < 0x20) bad_json("control character in a string");
    if (c != '\\') {
      *o++ = (char)c;
      continue;
    }
    switch (*jp++) {
    case '"': *o++ = '"'; break;
    case '\\': *o++ = '\\'; break;
    case '/': *o++ = '/'; break;
    case 'b': *o++ = '\b'; break;
    case 'f': *o++ = '\f'; break;
    case 'n': *o++ = '\n'; break;
    case 'r': *o++ = '\r'; break;
    case 't': *o++ = '\t'; break;
    case 'u': {
      unsigned cp = hex4();
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (jend - jp < 6 || jp[0] != '\\' || jp[1] != 'u') bad_json("unpaired surrogate");
        jp += 2;
        unsigned lo = hex4();
        if (lo < 0xDC00 || lo > 0xDFFF) bad_json("unpaired surrogate");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      } else if (cp >= 0xDC80 && cp <= 0xDCFF) {
        *o++ = (char)(cp - 0xDC00); /* surrogateescape: a raw byte of a non-UTF-8 name */
        break;
      } else if (cp >= 0xDC00 && cp <= 0xDFFF) bad_json("unpaired surrogate");
      o = put_utf8(o, cp);
      break;
    }
    default: bad_json("bad escape");
    }
  }
  jp++;
  *o = '\0';
  *out = buf;
  *outlen = (size_t)(o - buf);
}

static int isdigit_at(void) { return jp < jend && *jp >= '0' && *jp <= '9'; }

static double jnumber(void) {
  const char *s = jp;
  if (*jp == '-') jp++;
  if (jp < jend && *jp == '0') jp++;
  else if (isdigit_at()) while (isdigit_at()) jp++;
  else bad_json("bad number");
  if (jp < jend && *jp == '.') {
    jp++;
    if (!isdigit_at()) bad_json("bad number");
    while (isdigit_at()) jp++;
  }
  if (jp < jend && (*jp == 'e' || *jp == 'E')) {
    jp++;
    if (jp < jend && (*jp == '+' || *jp == '-')) jp++;
    if (!isdigit_at()) bad_json("bad number");
    while (isdigit_at()) jp++;
  }
  char *copy = strndup(s, (size_t)(jp - s)); /* strtod alone would also take hex, inf... */
  if (!copy) fail_os("malloc", ENOMEM);
  double v = strtod(copy, NULL);
  free(copy);
  return v;
}

static int literal(const char *word) {
  size_t n = strlen(word);
  if ((size_t)(jend - jp) < n || memcmp(jp, word, n) != 0) return 0;
  jp += n;
  return 1;
}

static struct jv *jvalue(void) {
  jws();
  if (jp >= jend) bad_json("unexpected end");
  struct jv *v = calloc(1, sizeof *v);
  if (!v) fail_os("malloc", ENOMEM);
  char open = *jp;
  if (open == '{' || open == '[') {
    if (++jdepth > 200) bad_json("nested too deeply");
    char close = open == '{' ? '}' : ']';
    v->type = open == '{' ? J_OBJ : J_ARR;
    jp++;
    jws();
    struct jv **tail = &v->first;
    if (jp < jend && *jp == close) jp++;
    else for (;;) {
      char *key = NULL;
      size_t keylen = 0;
      if (v->type == J_OBJ) {
        jws();
        if (jp >= jend || *jp != '"') bad_json("expected a key");
        jstring(&key, &keylen);
        jws();
        if (jp >= jend || *jp != ':') bad_json("expected ':'");
        jp++;
      }
      struct jv *m = jvalue();
      m->key = key, m->keylen = keylen;
      *tail = m, tail = &m->next;
      jws();
      if (jp < jend && *jp == ',') jp++;
      else if (jp < jend && *jp == close) {
        jp++;
        break;
      } else bad_json(v->type == J_OBJ ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    jdepth--;
  } else if (open == '"') v->type = J_STR, jstring(&v->str, &v->len);
  else if (literal("true")) v->type = J_BOOL, v->boolean = 1;
  else if (literal("false")) v->type = J_BOOL;
  else if (literal("null")) v->type = J_NULL;
  else if (open == '-' || (open >= '0' && open <= '9')) v->type = J_NUM, v->num = jnumber();
  else bad_json("unexpected character");
  return v;
}

/* A field of an object; absent and null both give NULL (= the default). */
static const struct jv *jget(const struct jv *obj, const char *key) {
  const struct jv *found = NULL;
  size_t n = strlen(key);
  if (obj && obj->type == J_OBJ)
    for (const struct jv *m = obj->first; m; m = m->next)
      if (m->keylen == n && memcmp(m->key, key, n) == 0) found = m; /* the last one wins */
  return found && found->type != J_NULL ? found : NULL;
}

static int opt_bool(const struct jv *args, const char *key, int def) {
  const struct jv *v = jget(args, key);
  if (!v) return def;
  if (v->type != J_BOOL) {
    char m[96];
    snprintf(m, sizeof m, "field \"%s\" must be a boolean", key);
    invalid(m);
  }
  return v->boolean;
}

/* ---- paths, names, entries ------------------------------------------- */

static void *xmalloc(size_t n) {
  void *p = malloc(n);
  if (!p) fail_os("malloc", ENOMEM);
  return p;
}

/* A copy without trailing slashes ("/" stays "/"). */
static char *strip_slashes(const char *path) {
  size_t n = strlen(path);
  while (n > 1 && path[n - 1] == '/') n--;
  char *p = xmalloc(n + 1);
  memcpy(p, path, n);
  p[n] = '\0';
  return p;
}

/* The directory part of an absolute path, or NULL for "/". */
static char *parent_of(const char *path) {
  char *p = strip_slashes(path), *slash = strrchr(p, '/');
  if (!slash || (slash == p && p[1] == '\0')) {
    free(p);
    return NULL;
  }
  while (slash > p && slash[-1] == '/') slash--;
  slash[slash == p ? 1 : 0] = '\0';
  return p;
}

char *path_join(const char *dir, const char *name) {
  size_t d = strlen(dir), n = strlen(name);
  int slash = d == 0 || dir[d - 1] != '/';
  char *p = xmalloc(d + (size_t)slash + n + 1);
  memcpy(p, dir, d);
  if (slash) p[d] = '/';
  memcpy(p + d + (size_t)slash, name, n + 1);
  return p;
}

/* A symlink's target, or NULL when it is not one (or cannot be read). */
static char *read_link(int dirfd, const char *name) {
  for (size_t cap = 256; cap <= (1 << 20); cap *= 2) {
    char *buf = xmalloc(cap);
    ssize_t n = readlinkat(dirfd, name, buf, cap);
    if (n >= 0 && (size_t)n < cap) {
      buf[n] = '\0';
      return buf;
    }
    free(buf);
    if (n < 0) return NULL;
  }
  return NULL;
}

/* /etc/passwd or /etc/group, read once: "name:x:id:..." lines. */
struct idfile {
  const char *path;
  char *data;
  size_t len;
  int loaded, cached;
  unsigned cached_id;
  char cached_name[256];
};
static struct idfile passwd = {.path = "/etc/passwd"}, group = {.path = "/etc/group"};

static void load_idfile(struct idfile *f) {
  f->loaded = 1;
  int fd = open(f->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  size_t cap = 0;
  for (;;) {
    if (f->len == cap) {
      if (cap >= (64u << 20)) break;
      cap = cap ? cap * 2 : 65536;
      char *grown = realloc(f->data, cap);
      if (!grown) break;
      f->data = grown;
    }
    ssize_t n = read(fd, f->data + f->len, cap - f->len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    f->len += (size_t)n;
  }
  close(fd);
}

/* The name of `id` in the file, or the number as text when it has none. */
static const char *id_name(struct idfile *f, unsigned id) {
  if (f->cached && f->cached_id == id) return f->cached_name;
  if (!f->loaded) load_idfile(f);
  f->cached = 1, f->cached_id = id;
  snprintf(f->cached_name, sizeof f->cached_name, "%u", id);
  const char *p = f->data, *end = p ? p + f->len : NULL;
  while (p && p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) eol = end;
    const char *c1 = memchr(p, ':', (size_t)(eol - p));
    const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(eol - c1 - 1)) : NULL;
    if (c2 && c1 > p && *p != '+' && *p != '-') { /* not NIS compat lines */
      const char *d = c2 + 1;
      unsigned long long v = 0;
      while (d < eol && *d >= '0' && *d <= '9' && v <= 0xFFFFFFFFull) v = v * 10 + (unsigned)(*d++ - '0');
      if (d > c2 + 1 && (d == eol || *d == ':') && v == id) {
        size_t n = (size_t)(c1 - p) < sizeof f->cached_name - 1 ? (size_t)(c1 - p)
                                                                  : sizeof f->cached_name - 1;
        memcpy(f->cached_name, p, n);
        f->cached_name[n] = '\0';
        break;
      }
    }
    p = eol + 1;
  }
  return f->cached_name;
}

/* Seconds since the epoch with the fraction: "1700000000.25". */
static void put_time(struct out *o, const struct timespec *t) {
  long long s = t->tv_sec;
  long ns = t->tv_nsec;
  const char *sign = "";
  if (s < 0) {
    sign = "-";
    if (ns > 0) s = -(s + 1), ns = 1000000000L - ns;
    else s = -s;
  }
  char buf[64];
  int n = snprintf(buf, sizeof buf, "%s%lld.%09ld", sign, s, ns);
  while (n > 2 && buf[n - 1] == '0' && buf[n - 2] != '.') n--;
  put(o, buf, (size_t)n);
}

/* One entry object (FS-TOOLS.md section 3); st from lstat. */
static void put_entry(const char *name, const char *path, const struct stat *st, const char *target) {
  struct out *o = &out1;
  char num[160];
  put_s(o, "{\"name\":");
  put_json_str(o, name, strlen(name));
  put_s(o, ",\"path\":");
  put_json_str(o, path, strlen(path));
  put_s(o, S_ISLNK(st->st_mode)   ? ",\"type\":\"symlink\""
           : S_ISDIR(st->st_mode) ? ",\"type\":\"directory\""
                                  : ",\"type\":\"file\""); /* FIFOs, sockets, devices too */
  snprintf(num, sizeof num, ",\"size\":%lld,\"mode\":%u,\"permissions\":\"%04o\",\"owner\":",
           (long long)st->st_size, (unsigned)st->st_mode, (unsigned)(st->st_mode & 07777));
  put_s(o, num);
  const char *owner = id_name(&passwd, st->st_uid);
  put_json_str(o, owner, strlen(owner));
  put_s(o, ",\"group\":");
  const char *grp = id_name(&group, st->st_gid);
  put_json_str(o, grp, strlen(grp));
  put_s(o, ",\"modified_time\":");
  put_time(o, &st->st_mtim);
  put_s(o, ",\"symlink_target\":");
  if (S_ISLNK(st->st_mode)) put_json_str(o, target ? target : "", target ? strlen(target) : 0);
  else put_s(o, "null");
  put_s(o, "}");
}

/* ---- ListFiles, Stat ------------------------------------------------- */

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b); /* bytewise: strcmp compares unsigned */
}

static void list_files(const char *path) {
  struct stat st;
  if (stat(path, &st) < 0) fail_os("stat", errno);
  if (!S_ISDIR(st.st_mode)) fail_kind("IsFile", "not a directory", "the path is not a directory");
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail_os("open directory", errno);
  DIR *d = fdopendir(fd);
  if (!d) fail_os("open directory", errno);
  char **names = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    errno = 0;
    struct dirent *e = readdir(d);
    if (!e) {
      if (errno) fail_os("read directory", errno);
      break;
    }
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      names = realloc(names, cap * sizeof *names);
      if (!names) fail_os("malloc", ENOMEM);
    }
    if (!(names[n++] = strdup(e->d_name))) fail_os("malloc", ENOMEM);
  }
  if (n) qsort(names, n, sizeof *names, by_name);
  char *prefix = strip_slashes(path);
  put_s(&out1, "[");
  int first = 1;
  for (size_t i = 0; i < n; i++) {
    struct stat est;
    if (fstatat(fd, names[i], &est, AT_SYMLINK_NOFOLLOW) < 0) continue; /* gone meanwhile */
    char *target = S_ISLNK(est.st_mode) ? read_link(fd, names[i]) : NULL;
    char *p = path_join(prefix, names[i]);
    if (!first) put_s(&out1, ",");
    first = 0;
    put_entry(names[i], p, &est, target);
    free(p);
    free(target);
  }
  put_s(&out1, "]");
  out_flush();
  closedir(d);
}

static void stat_path(const char *path) {
  struct stat st;
  if (lstat(path, &st) < 0) fail_os("stat", errno);
  char *copy = strip_slashes(path);
  char *target = S_ISLNK(st.st_mode) ? read_link(AT_FDCWD, path) : NULL;
  put_entry(strrchr(copy, '/') + 1, path, &st, target); /* "/" has the name "" */
  out_flush();
}

/* ---- MakeDirectory, Remove ------------------------------------------- */

/*
 * mkdir -p. An existing non-directory is PathAlreadyExists when it is the
 * requested path (is_final), NotDirectory when it blocks an ancestor.
 */
static void mkdirs(const char *path, int is_final) {
  for (int attempt = 0;; attempt++) {
    if (mkdir(path, 0777) == 0) return;
    int err = errno;
    if (err == EEXIST) {
      struct stat st;
      if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return;
      if (is_final) fail_kind("PathAlreadyExists", "path already exists", "mkdir: File exists (os error 17)");
      fail_kind("NotDirectory", "not a directory", "a parent of the path exists and is not a directory");
    }
    char *parent = err == ENOENT && attempt == 0 ? parent_of(path) : NULL;
    if (!parent) fail_os("create directory", err);
    mkdirs(parent, 0);
    free(parent);
  }
}

static void make_directory(const char *path, int parents) {
  if (!parents) {
    if (mkdir(path, 0777) < 0) fail_os("create directory", errno); /* EEXIST: PathAlreadyExists */
    return;
  }
  struct stat st;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return; /* a directory, or a link to one */
  mkdirs(path, 1);
}

/* Removes the directory `name` under dirfd and everything in it; never follows a symlink. */
static void remove_tree(int dirfd, const char *name) {
  int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return;
    if (errno != ENOTDIR && errno != ELOOP) fail_os("open directory", errno);
    if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT) fail_os("remove", errno);
    return; /* it became a non-directory meanwhile */
  }
  DIR *d = fdopendir(fd);
  if (!d) fail_os("open directory", errno);
  for (int pass = 0; pass < 3; pass++) { /* entries created while we removed: try again */
    struct dirent *e;
    rewinddir(d);
    while ((errno = 0, e = readdir(d))) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      int isdir = e->d_type == DT_DIR;
      struct stat st;
      if (e->d_type == DT_UNKNOWN)
        isdir = fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
      if (isdir) remove_tree(fd, e->d_name);
      else if (unlinkat(fd, e->d_name, 0) < 0 && errno != ENOENT) fail_os("remove", errno);
    }
    if (errno) fail_os("read directory", errno);
    if (unlinkat(dirfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT) break;
    if ((errno != ENOTEMPTY && errno != EEXIST) || pass == 2) fail_os("remove directory", errno);
  }
  closedir(d);
}

static void remove_path(const char *path, int recursive) {
  struct stat st;
  if (lstat(path, &st) < 0) fail_os("stat", errno); /* ENOENT, ENOTDIR: NotFound */
  if (!S_ISDIR(st.st_mode)) {
    if (unlink(path) < 0) fail_os("remove", errno);
  } else if (!recursive) {
    if (rmdir(path) < 0) fail_os("remove directory", errno); /* ENOTEMPTY, EEXIST: DirectoryNotEmpty */
  } else remove_tree(AT_FDCWD, path);
}

/* ---- ReadFile, WriteFile --------------------------------------------- */

static char iobuf[CHUNK];

static void set_blocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0 && (fl & O_NONBLOCK)) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
}

/*
 * Copies `in` to `out` until EOF, or until more than `max` bytes went (max <
 * 0: no limit). splice from a pipe, sendfile from a file, else read/write.
 * With `grow`, `out` is a new regular file written from offset 0 whose blocks
 * are allocated ahead of the data (fallocate, GROW_STEP at a time; best
 * effort) and whose size is set to the count at EOF. Returns the count, or -1
 * with errno set.
 *
 * Why grow: ext4 delays allocating a written file's blocks, and renaming such
 * a file over an existing one makes it write the whole file back inside
 * rename(2) (auto_da_alloc): 160-220 ms for 256 MiB here. Blocks allocated
 * beforehand leave nothing to flush: the same rename takes 55-75 ms (freeing
 * the old file), and the writes themselves get faster (docs/DECISIONS.md,
 * "Blocks allocated ahead of a file's bytes").
 */
#define GROW_STEP (8LL << 20)
static long long pump(int in, int out, long long max, int grow) {
  struct stat st;
  int how = fstat(in, &st) == 0 && S_ISFIFO(st.st_mode) ? 2 : 1; /* 2 splice, 1 sendfile, 0 copy */
  long long total = 0, allocated = 0;
  for (;;) {
    size_t want = CHUNK;
    if (max >= 0 && max + 1 - total < (long long)want) want = (size_t)(max + 1 - total);
    if (grow && total + (long long)want > allocated) {
      if (fallocate(out, 0, allocated, GROW_STEP) == 0) allocated += GROW_STEP;
      else grow = 0; /* not here (tmpfs without room, a filesystem without it): write as is */
    }
    ssize_t n;
    if (how == 2) n = splice(in, NULL, out, NULL, want, SPLICE_F_MOVE);
    else if (how == 1) n = sendfile(out, in, NULL, want);
    else if ((n = read(in, iobuf, want)) > 0 && write_all(out, iobuf, (size_t)n) < 0) return -1;
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd p[2] = {{in, POLLIN, 0}, {out, POLLOUT, 0}};
        poll(p, 2, 100);
        continue;
      }
      if (how && (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP || errno == EBADF)) {
        how = 0; /* not for these two fds: nothing was moved, copy by hand */
        continue;
      }
      return -1;
    }
    if (n == 0) return allocated > total && ftruncate(out, total) < 0 ? -1 : total;
    total += n;
    if (max >= 0 && total > max) return total;
  }
}

/*
 * The read limit: 5 GiB, or less when the router's per-exec output cap is
 * smaller (it sets TASKROUTER_FS_READ_LIMIT, in bytes, so a read never stalls
 * on the cap; FS-TOOLS.md section 6). A larger or malformed value is ignored.
 */
static long long read_limit(void) {
  const char *v = getenv("TASKROUTER_FS_READ_LIMIT");
  if (!v || !*v) return READ_LIMIT;
  char *end;
  errno = 0;
  long long n = strtoll(v, &end, 10);
  if (errno || *end || n < 0 || n > READ_LIMIT) return READ_LIMIT;
  return n;
}

_Noreturn static void too_large(long long size, long long limit) {
  char m[128];
  if (size >= 0)
    snprintf(m, sizeof m, "file size %lld bytes is over the %lld-byte read limit", size, limit);
  else snprintf(m, sizeof m, "file is over the %lld-byte read limit", limit);
  fail_kind("FileTooLarge", m, "ReadFile reads files of up to 5 GiB (less when the router caps output)");
}

static void read_file(const char *path) {
  const long long limit = read_limit();
  struct stat st;
  if (stat(path, &st) < 0) fail_os("stat", errno);
  if (S_ISDIR(st.st_mode)) fail_kind("IsDirectory", "is a directory", "cannot read a directory");
  if (st.st_size > limit) too_large(st.st_size, limit);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) fail_os("open", errno);
  if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
    fail_kind("IsDirectory", "is a directory", "cannot read a directory");
  if (st.st_size > limit) too_large(st.st_size, limit);
  set_blocking(1);
  fcntl(1, F_SETPIPE_SZ, CHUNK); /* fewer, larger steps when stdout is a pipe */
  long long n = pump(fd, 1, limit, 0);
  if (n < 0) fail_os("read the file to stdout", errno);
  if (n > limit) too_large(-1, limit); /* its size understated it (procfs, a device) */
}

static void on_write_signal(int sig) {
  static const char msg[] =
      "{\"version\":1,\"error_kind\":\"Io\",\"message\":\"interrupted by a signal before the end "
      "of the content: the file was not written\",\"detail\":\"signal before stdin EOF\"}\n";
  (void)sig;
  if (staged) unlink(staged_path);
  (void)!write(2, msg, sizeof msg - 1);
  _exit(1);
}

static int denied(int err) { return err == EACCES || err == EPERM || err == EROFS; }

/* The target of a final symlink (chains followed), else the path itself. */
static char *resolve_links(const char *path) {
  char *p = strip_slashes(path);
  for (int i = 0; i < 40; i++) {
    char *t = read_link(AT_FDCWD, p);
    if (!t) return p;
    if (t[0] != '/') {
      char *dir = parent_of(p), *joined = path_join(dir ? dir : "/", t);
      free(dir);
      free(t);
      t = joined;
    }
    free(p);
    p = t;
  }
  fail_os("resolve the symbolic link", ELOOP);
}

/* Names a staged file in `dir`: a unique dot-file name, made by `make` (returns 0 or -1). */
static int stage_name(const char *dir, int (*make)(void *), void *arg) {
  sigset_t sigs, old;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM), sigaddset(&sigs, SIGINT), sigaddset(&sigs, SIGHUP);
  sigprocmask(SIG_BLOCK, &sigs, &old);
  int r = -1;
  for (int i = 0; i < 100; i++) {
    if ((size_t)snprintf(staged_path, sizeof staged_path, "%s%s.modal-fs-tools.%d.%d", dir,
                         dir[strlen(dir) - 1] == '/' ? "" : "/", (int)getpid(), i) >= sizeof staged_path) {
      errno = ENAMETOOLONG;
      break;
    }
    if ((r = make(arg)) >= 0) {
      staged = 1;
      break;
    }
    if (errno != EEXIST) break;
  }
  int err = errno;
  sigprocmask(SIG_SETMASK, &old, NULL);
  errno = err;
  return r;
}

static int make_named(void *fdp) {
  return *(int *)fdp = open(staged_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
}

static int link_unnamed(void *fdp) { /* gives the O_TMPFILE file a name */
  int fd = *(int *)fdp;
  char proc[64];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  if (linkat(AT_FDCWD, proc, AT_FDCWD, staged_path, AT_SYMLINK_FOLLOW) == 0) return 0;
  if (errno == EEXIST) return -1;
  return linkat(fd, "", AT_FDCWD, staged_path, AT_EMPTY_PATH); /* no /proc: needs privilege */
}

/* Copies the staged content (from its start) into `to`; closes it. */
static void copy_into(int from, int to) {
  if (lseek(from, 0, SEEK_SET) < 0) fail_os("rewind the staged content", errno);
  if (pump(from, to, -1, 0) < 0) fail_os("write the file", errno);
  if (close(to) < 0) fail_os("write the file", errno);
}

static int open_target(const char *target) {
  int fd = open(target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0666);
  if (fd < 0) fail_os("open", errno);
  return fd;
}

/*
 * The file WriteFile replaces, held open across the rename so that freeing it
 * does not happen inside rename(2): with `old` (lstat of `target`, a regular
 * file of RELEASE_FROM bytes or more and its only name), the target opened
 * read-only and checked to be that same file; else -1. Why: the rename drops
 * the old file's last name, and the kernel frees it right there, waiting for
 * any writeback of its pages under way: 66-298 ms for 256 MiB here while
 * other writes were being flushed, 13-18 ms when none were (docs/DECISIONS.md,
 * "A replaced file let go off the critical path"). O_NONBLOCK: a lease
 * holder is not waited for (EWOULDBLOCK: nothing held).
 */
#define RELEASE_FROM (8LL << 20)
static int hold_old(const char *target, const struct stat *old) {
  if (!S_ISREG(old->st_mode) || old->st_nlink != 1 || old->st_size < RELEASE_FROM) return -1;
  int fd = open(target, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat now;
  if (fstat(fd, &now) < 0 || now.st_dev != old->st_dev || now.st_ino != old->st_ino) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Closes descriptors lo to hi; nothing when lo > hi. 0, or -1 with errno set. */
static int close_between(int lo, int hi) {
  return lo > hi ? 0 : (int)syscall(SYS_close_range, (unsigned)lo, (unsigned)hi, 0U);
}

/* In a child: closes every descriptor but `a` and `b` (a < b). */
static void close_all_but(int a, int b) {
  if (close_between(0, a - 1) == 0 && close_between(a + 1, b - 1) == 0 &&
      syscall(SYS_close_range, (unsigned)b + 1, ~0U, 0U) == 0)
    return;
  struct rlimit rl; /* no close_range (before Linux 5.9, or refused): one by one */
  long top = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (1U << 20) ? (long)rl.rlim_cur : 1L << 20;
  for (long i = 0; i < top; i++)
    if (i != a && i != b) close((int)i);
}

/*
 * Lets go of `fd` (hold_old's, its file now nameless) in a child, so that the
 * kernel frees the file there: the child keeps only `fd` and the read end of a
 * pipe (no pipe of the exec stays open), waits for EOF on it, which comes once
 * the helper has closed its own copy of `fd` and the write end (or exited),
 * then closes `fd`, the last reference, and exits. The helper does not wait
 * for it: an orphan is reaped by the task's init or subreaper. Without a
 * child (no pipe, or fork failed: a pids limit), the file is freed here, as
 * it would have been in the rename.
 */
static void release_later(int fd) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) {
    close(fd);
    return;
  }
  pid_t pid = fork();
  if (pid == 0) {
    close(p[1]);
    close_all_but(fd < p[0] ? fd : p[0], fd < p[0] ? p[0] : fd);
    char c;
    while (read(p[0], &c, 1) < 0 && errno == EINTR) {
    }
    close(fd);
    _exit(0);
  }
  close(fd); /* first: the child's close is the last */
  close(p[0]);
  close(p[1]);
}

static void write_file(const char *path) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_write_signal;
  sigfillset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL), sigaction(SIGINT, &sa, NULL), sigaction(SIGHUP, &sa, NULL);

  /* Everything that can fail early fails before stdin is touched. */
  struct stat st;
  if (stat(path, &st) == 0) {
    if (S_ISDIR(st.st_mode)) fail_kind("IsDirectory", "is a directory", "cannot write over a directory");
  } else if (errno != ENOENT) fail_os("stat", errno); /* ENOTDIR: NotDirectory */
  if (path[strlen(path) - 1] == '/')
    fail_kind("IsDirectory", "is a directory path (it ends with '/')", "open: Is a directory (os error 21)");
  char *target = resolve_links(path), *dir = parent_of(target);
  if (!dir) fail_kind("IsDirectory", "is a directory", "cannot write over a directory");
  if (stat(dir, &st) < 0) {
    if (errno != ENOENT) fail_os("stat", errno);
    mkdirs(dir, 0);
  } else if (!S_ISDIR(st.st_mode))
    fail_kind("NotDirectory", "not a directory", "a parent of the path is not a directory");
  struct stat old;
  int exists = lstat(target, &old) == 0;
  if (!exists && errno != ENOENT) fail_os("stat", errno);
  if (exists && S_ISDIR(old.st_mode)) fail_kind("IsDirectory", "is a directory", "cannot write over a directory");

  /*
   * Where the content waits for EOF: an unnamed file in the target's directory
   * (linked and renamed over the target at EOF), else a named dot-file there,
   * else (a device or FIFO target, or a directory we may not write to holding
   * a file we may) a spool file elsewhere, copied into the target at EOF.
   */
  enum { UNNAMED, NAMED, SPOOL } how = UNNAMED;
  int fd = -1, into = -1;
  if (!exists || S_ISREG(old.st_mode)) {
    fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0666);
    if (fd < 0 && !denied(errno)) how = NAMED, stage_name(dir, make_named, &fd);
    if (fd < 0) {
      if (!denied(errno) || !exists) fail_os("create the file", errno);
      if ((into = open(target, O_WRONLY | O_CLOEXEC | O_NOCTTY)) < 0) fail_os("open", errno);
    }
  }
  if (fd < 0) {
    how = SPOOL;
    fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) fd = memfd_create("modal-sandbox-fs-tools", MFD_CLOEXEC);
    if (fd < 0) fail_os("create a spool file", errno);
  } else if (how != SPOOL && exists) { /* a replacement keeps the old file's owner and mode */
    if (geteuid() == 0) (void)!fchown(fd, old.st_uid, old.st_gid);
    (void)!fchmod(fd, old.st_mode & 07777);
  } else if (how == NAMED) {
    mode_t mask = umask(0);
    umask(mask);
    (void)!fchmod(fd, 0666 & ~mask);
  }

  set_blocking(0);
  fcntl(0, F_SETPIPE_SZ, CHUNK);
  if (pump(0, fd, -1, how != SPOOL) < 0) fail_os("receive the content", errno);

  /* EOF: the content is complete. No signal may interrupt putting it in place. */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM), sigaddset(&sigs, SIGINT), sigaddset(&sigs, SIGHUP);
  sigprocmask(SIG_BLOCK, &sigs, NULL);
  if (how == SPOOL) {
    if (into >= 0) {
      if (ftruncate(into, 0) < 0) fail_os("truncate", errno);
    } else into = open_target(target);
    copy_into(fd, into);
    return;
  }
  if (how == UNNAMED && stage_name(dir, link_unnamed, &fd) < 0) {
    copy_into(fd, open_target(target)); /* cannot be named (no /proc): write in place */
    return;
  }
  int held = exists ? hold_old(target, &old) : -1;
  if (rename(staged_path, target) < 0) {
    int err = errno;
    if (held >= 0) close(held);
    if (err != EBUSY && err != EXDEV) fail_os("replace the file", err);
    copy_into(fd, open_target(target)); /* the target is a mount point (a bind-mounted file) */
    unlink(staged_path);
    held = -1;
  }
  staged = 0;
  if (close(fd) < 0) {
    if (held >= 0) close(held);
    fail_os("write the file", errno);
  }
  if (held >= 0) release_later(held);
}

/* ---- main ------------------------------------------------------------ */

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN); /* EPIPE instead: reported, and temporary files removed */
  if (argc != 2) invalid("expected exactly one argument: the command as a JSON object");
  jstart = jp = argv[1];
  jend = jp + strlen(jp);
  struct jv *root = jvalue();
  jws();
  if (jp != jend) bad_json("text after the value");
  if (root->type != J_OBJ || !root->first || root->first->next)
    invalid("the argument must be a JSON object with exactly one key, the command name");
  const struct jv *args = root->first;
  for (int i = 0; i < N_COMMANDS; i++)
    if (args->keylen == strlen(COMMANDS[i]) && memcmp(args->key, COMMANDS[i], args->keylen) == 0)
      command = i;
  if (command < 0) {
    char m[160];
    snprintf(m, sizeof m, "unknown command \"%.100s\"", args->key);
    invalid(m);
  }
  if (args->type != J_OBJ && args->type != J_NULL) invalid("the command's fields must be a JSON object");
  const struct jv *pv = jget(args, "path");
  if (!pv || pv->type != J_STR) invalid("field \"path\" must be a string");
  const char *path = pv->str;
  if (strlen(path) != pv->len) invalid("the path contains a NUL character");
  if (path[0] != '/') invalid("the path must be absolute (start with '/')");

  switch (command) {
  case LIST_FILES: list_files(path); break;
  case STAT: stat_path(path); break;
  case MAKE_DIRECTORY: make_directory(path, opt_bool(args, "parents", 1)); break;
  case REMOVE: remove_path(path, opt_bool(args, "recursive", 0)); break;
  case READ_FILE: read_file(path); break;
  case WRITE_FILE: write_file(path); break;
  case WATCH: {
    int recursive = opt_bool(args, "recursive", 0);
    unsigned filter = ~0u;
    const struct jv *f = jget(args, "filter"), *t = jget(args, "timeout_secs");
    if (f) {
      if (f->type != J_ARR) invalid("field \"filter\" must be an array of strings or null");
      filter = 0;
      for (const struct jv *e = f->first; e; e = e->next) {
        if (e->type != J_STR) invalid("field \"filter\" must be an array of strings or null");
        filter |= watch_kind(e->str, e->len); /* names it does not know: ignored */
      }
    }
    long long timeout = -1; /* none */
    if (t && t->type != J_NUM) invalid("field \"timeout_secs\" must be a number or null");
    if (t) timeout = t->num <= 0 ? 0 : t->num >= 1e12 ? -1 : (long long)t->num;
    watch(path, recursive, filter, timeout);
    break;
  }
  }
  return 0;
}
