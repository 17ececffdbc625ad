/* dtag.c - the decision tag (dtag.h). */
#include "decisions/dtag.h"

#include <string.h>

#include "common/hash.h"

#define HASH_MASK 0x3ffffffu

uint32_t mg_dtag_hash(const char *flag, const char *variant) {
  size_t fl = strlen(flag), vl = strlen(variant);
  char buf[512];
  uint64_t h;
  uint32_t x;
  /* Names longer than the buffer hash in two parts (rare: names are
   * short); the result only has to be stable. */
  if (fl + vl + 1 <= sizeof(buf)) {
    memcpy(buf, flag, fl);
    buf[fl] = '\x1f';
    memcpy(buf + fl + 1, variant, vl);
    h = mg_xxh64(buf, fl + vl + 1, 0);
  } else {
    h = mg_xxh64(variant, vl, mg_xxh64(flag, fl, 0x1f));
  }
  x = (uint32_t)(h & HASH_MASK);
  return x ? x : 1;
}

static const char hexd[] = "0123456789abcdef";

void mg_dtag_set(char id[33], const struct mg_dtag *t) {
  uint32_t v = t->hash & HASH_MASK, c;
  int i;
  if (v) {
    if (t->rollout)
      v |= 1u << 31;
    c = t->chars <= 4 ? t->chars : 0;
    v |= c << 28;
    c = t->tools <= 3 ? t->tools : 0;
    v |= c << 26;
  }
  for (i = 0; i < 8; i++)
    id[8 + i] = hexd[(v >> (28 - 4 * i)) & 0xf];
}

static int hexv(char ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  return -1;
}

bool mg_dtag_get(const char *id, struct mg_dtag *out) {
  uint32_t v = 0, c;
  int i;
  memset(out, 0, sizeof(*out));
  for (i = 0; i < 8; i++) {
    int d = hexv(id[8 + i]);
    if (d < 0)
      return false;
    v = v << 4 | (uint32_t)d;
  }
  if ((v & HASH_MASK) == 0)
    return false;
  out->hash = v & HASH_MASK;
  out->rollout = (v >> 31) & 1;
  c = (v >> 28) & 7;
  out->chars = (uint8_t)(c <= 4 ? c : 0);
  out->tools = (uint8_t)((v >> 26) & 3);
  return true;
}
