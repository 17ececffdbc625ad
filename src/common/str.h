/* str.h - borrowed byte slices and small string helpers. */
#ifndef MG_STR_H
#define MG_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A borrowed slice: the bytes belong to whoever owns the buffer it points
 * into, and the slice must not outlive it. Not NUL-terminated. */
struct mg_str {
  const char *p;
  size_t len;
};

#define MG_STR_NULL ((struct mg_str){NULL, 0})
#define MG_STR_LIT(s) ((struct mg_str){(s), sizeof(s) - 1})

static inline struct mg_str mg_str_c(const char *s) {
  struct mg_str r = {s, s ? strlen(s) : 0};
  return r;
}

static inline bool mg_str_eq(struct mg_str a, struct mg_str b) {
  return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static inline bool mg_str_eq_c(struct mg_str a, const char *b) {
  return mg_str_eq(a, mg_str_c(b));
}

/* ASCII case-insensitive comparison (header names). */
bool mg_str_eq_nocase(struct mg_str a, struct mg_str b);
bool mg_str_has_prefix_nocase(struct mg_str s, const char *prefix);

/* Copy into a fresh NUL-terminated allocation (NULL on OOM). */
char *mg_str_dup(struct mg_str s);

/* Parse a decimal unsigned integer that fills the whole slice. */
int mg_str_to_u64(struct mg_str s, uint64_t *out);

/* Decimal digits of v at the end of buf[24]; returns where they begin
 * (not NUL-terminated; the length is buf + 24 - the result). */
static inline char *mg_u64_digits(char buf[24], uint64_t v) {
  char *p = buf + 24;
  do {
    *--p = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  return p;
}

/* Lower-case hex of n bytes into out (2n + 1 bytes, NUL-terminated). */
void mg_hex(const void *p, size_t n, char *out);

#endif
