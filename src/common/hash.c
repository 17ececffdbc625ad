/* hash.c - thin wrappers over Debian's xxhash (header-only inline build). */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/hash.h"

uint64_t mg_hash_salted(const char *salt, size_t salt_len, const void *data,
                        size_t len) {
  /* The salt goes in first, then a separator byte, then the unit: two flags
   * with different salts see independent hashes of the same unit (DESIGN.md,
   * "Bucketing"). Done in one state to avoid a copy. */
  XXH3_state_t st;
  static const unsigned char sep = 0x1f;
  XXH3_64bits_reset(&st);
  XXH3_64bits_update(&st, salt, salt_len);
  XXH3_64bits_update(&st, &sep, 1);
  XXH3_64bits_update(&st, data, len);
  return XXH3_64bits_digest(&st);
}

uint64_t mg_hash64(const void *data, size_t len) {
  return XXH3_64bits(data, len);
}

uint64_t mg_xxh64(const void *data, size_t len, uint64_t seed) {
  return XXH64(data, len, seed);
}

struct mg_hash128 mg_hash128(const void *data, size_t len) {
  XXH128_hash_t h = XXH3_128bits(data, len);
  struct mg_hash128 r = {h.high64, h.low64};
  return r;
}

struct mg_hash_state {
  XXH3_state_t st;
};

struct mg_hash_state *mg_hash_state_new(void) {
  struct mg_hash_state *s = (struct mg_hash_state *)XXH3_createState();
  if (s)
    XXH3_64bits_reset(&s->st);
  return s;
}

void mg_hash_state_free(struct mg_hash_state *s) {
  XXH3_freeState((XXH3_state_t *)s);
}

void mg_hash_state_reset(struct mg_hash_state *s) { XXH3_64bits_reset(&s->st); }

void mg_hash_state_update(struct mg_hash_state *s, const void *p, size_t n) {
  XXH3_64bits_update(&s->st, p, n);
}

uint64_t mg_hash_state_digest(const struct mg_hash_state *s) {
  return XXH3_64bits_digest(&s->st);
}
