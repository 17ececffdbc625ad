/* hash.h - the hashes the product contract names (XXH3, XXH64). */
#ifndef MG_HASH_H
#define MG_HASH_H

#include <stddef.h>
#include <stdint.h>

/* XXH3 64-bit of data, seeded by a salt string (bucketing). */
uint64_t mg_hash_salted(const char *salt, size_t salt_len, const void *data,
                        size_t len);
uint64_t mg_hash64(const void *data, size_t len);
uint64_t mg_xxh64(const void *data, size_t len, uint64_t seed);

struct mg_hash128 {
  uint64_t hi, lo;
};
struct mg_hash128 mg_hash128(const void *data, size_t len);

/* Incremental XXH3-64, for hashing data that arrives in pieces. */
struct mg_hash_state;
struct mg_hash_state *mg_hash_state_new(void);
void mg_hash_state_free(struct mg_hash_state *st);
void mg_hash_state_reset(struct mg_hash_state *st);
void mg_hash_state_update(struct mg_hash_state *st, const void *p, size_t n);
uint64_t mg_hash_state_digest(const struct mg_hash_state *st);

#endif
