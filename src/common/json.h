/* json.h - a strict RFC 8259 scanner that validates once and records a flat
 * token array with byte offsets.
 *
 * Request and response bodies are scanned, not built into trees: the proxy
 * needs a handful of fields and the exact byte positions of a few values (to
 * splice a new `model` in without re-serialising the body). Tokens are laid
 * out in document order; an object's members follow it as key, value
 * subtree, key, value subtree, ...; `next` skips a whole subtree.
 *
 *   {"a":[1,2],"b":true}
 *   0 OBJECT count=2 next=7
 *   1 STRING "a"     next=2
 *   2 ARRAY count=2  next=5
 *   3 NUMBER 1       next=4
 *   4 NUMBER 2       next=5
 *   5 STRING "b"     next=6   (key)   6 TRUE next=7  -> root.next == 7 == n
 */
#ifndef MG_JSON_H
#define MG_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/str.h"

enum mg_json_type {
  MG_JSON_NONE = 0,
  MG_JSON_OBJECT,
  MG_JSON_ARRAY,
  MG_JSON_STRING,
  MG_JSON_NUMBER,
  MG_JSON_TRUE,
  MG_JSON_FALSE,
  MG_JSON_NULL
};

#define MG_JSON_NOTFOUND UINT32_MAX
#define MG_JSON_MAX_DEPTH 128

struct mg_json_tok {
  uint32_t start; /* offset of the first byte: '{', '[', '"', digit, 't' ... */
  uint32_t end;   /* offset one past the last byte (closing quote/brace) */
  uint32_t next;  /* index of the first token after this value's subtree */
  uint32_t count; /* objects: members; arrays: elements; otherwise 0 */
  uint8_t type;   /* enum mg_json_type */
  uint8_t escaped; /* strings: contains at least one backslash escape */
};

struct mg_json_doc {
  const char *src;          /* borrowed: the scanned bytes; must outlive doc */
  size_t len;
  struct mg_json_tok *toks; /* owned; reused across parses; freed by free() */
  uint32_t n, cap;
  uint32_t max_tokens;      /* parse fails with MG_JSON_ETOOMANY past this */
};

enum {
  MG_JSON_EINVAL = -1,   /* not valid JSON (err says where and why) */
  MG_JSON_ETOOMANY = -2, /* more than max_tokens values */
  MG_JSON_EDEPTH = -3,   /* nested deeper than MG_JSON_MAX_DEPTH */
  MG_JSON_ENOMEM = -4,
};

struct mg_json_error {
  size_t offset;   /* byte offset of the problem */
  const char *msg; /* static text, e.g. "unterminated string" */
};

void mg_json_init(struct mg_json_doc *d, uint32_t max_tokens);
void mg_json_free(struct mg_json_doc *d);
/* Give the token array back when it grew past keep tokens (an outlier
 * answer): the next parse starts small again. The last parse's tokens are
 * gone. */
void mg_json_shrink(struct mg_json_doc *d, uint32_t keep);

/* The most tokens a JSON text of len bytes can hold: every value takes a
 * byte, and every one but the first a separator too. */
static inline uint32_t mg_json_max_tokens_for(size_t len) {
  size_t n = len / 2 + 1;
  return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

/* Scan src[0..len): exactly one JSON value with optional surrounding
 * whitespace. Strings must be valid UTF-8 with valid escapes; numbers follow
 * the RFC grammar. Returns 0 or a negative MG_JSON_E* code; err may be NULL. */
int mg_json_parse(struct mg_json_doc *d, const char *src, size_t len,
                  struct mg_json_error *err) MG_WARN_UNUSED;

/* Index of the value for key in the object at index obj (the first match),
 * or MG_JSON_NOTFOUND. Keys compare after unescaping. */
uint32_t mg_json_get(const struct mg_json_doc *d, uint32_t obj,
                     const char *key, size_t klen);

static inline uint32_t mg_json_getc(const struct mg_json_doc *d, uint32_t obj,
                                    const char *key) {
  return mg_json_get(d, obj, key, strlen(key));
}

/* Index of the i-th element of the array at index arr, or MG_JSON_NOTFOUND. */
uint32_t mg_json_at(const struct mg_json_doc *d, uint32_t arr, uint32_t i);

/* Resolve an RFC 6901 JSON pointer ("" is the value itself; "/a/0/b")
 * relative to the value at index root. MG_JSON_NOTFOUND when absent. */
uint32_t mg_json_pointer(const struct mg_json_doc *d, uint32_t root,
                         const char *ptr);

/* The raw bytes of a value (strings include their quotes). */
struct mg_str mg_json_raw(const struct mg_json_doc *d, uint32_t i);

/* A string token without its quotes and without unescaping: usable as is
 * when tok.escaped is 0. */
struct mg_str mg_json_str_raw(const struct mg_json_doc *d, uint32_t i);

/* Does the string at index i equal s after unescaping? */
bool mg_json_str_eq(const struct mg_json_doc *d, uint32_t i, const char *s,
                    size_t n);

/* Append the unescaped UTF-8 of the string at index i to out. Lone
 * surrogate escapes become U+FFFD. 0, -E2BIG or -ENOMEM. */
int mg_json_str_decode(const struct mg_json_doc *d, uint32_t i,
                       struct mg_buf *out) MG_WARN_UNUSED;

/* Number of Unicode code points in the unescaped string at index i. */
size_t mg_json_str_chars(const struct mg_json_doc *d, uint32_t i);

/* The number at index i as a double (0 on success, -EINVAL when i is not a
 * number). */
int mg_json_num(const struct mg_json_doc *d, uint32_t i, double *out);
/* The number at index i as an integer: -EINVAL when it is not a number or
 * has a fraction or exponent that makes it non-integral, -ERANGE past int64. */
int mg_json_int(const struct mg_json_doc *d, uint32_t i, int64_t *out);

/* Append the canonical form of the value at index i: no whitespace, object
 * keys sorted by their unescaped bytes, strings re-escaped minimally (only
 * '"', '\\' and control characters; everything else as raw UTF-8), numbers
 * in the shortest form that round-trips through a double, with integral
 * values of magnitude below 2^53 printed as integers (1.0, 1e0 and 1 all
 * become "1"; -0 becomes "0"). skip_keys (NULL-ended, may be NULL) names
 * keys of the value at index i itself to leave out. */
int mg_json_canonical(const struct mg_json_doc *d, uint32_t i,
                      const char *const *skip_keys,
                      struct mg_buf *out) MG_WARN_UNUSED;

#endif
