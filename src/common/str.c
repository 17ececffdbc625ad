/* str.c - small string helpers. */
#include "common/str.h"

#include <errno.h>
#include <stdlib.h>

static inline unsigned char lower(unsigned char c) {
  return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

bool mg_str_eq_nocase(struct mg_str a, struct mg_str b) {
  size_t i;
  if (a.len != b.len)
    return false;
  for (i = 0; i < a.len; i++)
    if (lower((unsigned char)a.p[i]) != lower((unsigned char)b.p[i]))
      return false;
  return true;
}

bool mg_str_has_prefix_nocase(struct mg_str s, const char *prefix) {
  size_t n = strlen(prefix);
  if (s.len < n)
    return false;
  return mg_str_eq_nocase((struct mg_str){s.p, n}, (struct mg_str){prefix, n});
}

char *mg_str_dup(struct mg_str s) {
  char *p = malloc(s.len + 1);
  if (p == NULL)
    return NULL;
  if (s.len)
    memcpy(p, s.p, s.len);
  p[s.len] = '\0';
  return p;
}

int mg_str_to_u64(struct mg_str s, uint64_t *out) {
  uint64_t v = 0;
  size_t i;
  if (s.len == 0 || s.len > 20)
    return -EINVAL;
  for (i = 0; i < s.len; i++) {
    unsigned d = (unsigned char)s.p[i] - '0';
    if (d > 9)
      return -EINVAL;
    if (v > (UINT64_MAX - d) / 10)
      return -ERANGE;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

void mg_hex(const void *p, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  const unsigned char *b = p;
  size_t i;
  for (i = 0; i < n; i++) {
    out[2 * i] = digits[b[i] >> 4];
    out[2 * i + 1] = digits[b[i] & 15];
  }
  out[2 * n] = '\0';
}
