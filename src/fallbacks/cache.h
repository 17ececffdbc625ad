/* cache.h - the answer cache (DESIGN.md, "Fallback tiers": cache).
 *
 * Key: XXH3-128 over the alias name, a 0 byte, and the canonical JSON of the
 * request body without the fields that do not change the answer (`model` -
 * the alias stands for it -, `user`, `stream`, `stream_options`,
 * `metadata`). Key order and number formatting do not change the key; every
 * other parameter does.
 *
 * A bounded LRU by entries and by bytes, with a TTL. It stores answers that
 * passed the confidence gate (the caller decides); the bytes stored are the
 * answer the client saw. Single-threaded. */
#ifndef MG_CACHE_H
#define MG_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/json.h"

/* What one entry costs besides its body, counted against max_bytes: the
 * entry header, its share of the hash table and malloc's bookkeeping,
 * rounded up. A budget in bytes therefore also bounds the entry count. */
#define MG_CACHE_ENTRY_OVERHEAD 128

struct mg_cache_cfg {
  bool enabled;
  uint32_t max_entries;
  uint64_t max_bytes;   /* bodies plus MG_CACHE_ENTRY_OVERHEAD each */
  uint32_t ttl_ms;      /* entries older than this miss; 0: no expiry */
  bool serve_hits;      /* answer hits before calling any target */
};

struct mg_cache_key {
  uint64_t hi, lo;
};

struct mg_cache_stats {
  uint64_t entries, bytes;
  uint64_t hits, misses, stores, evictions, expirations;
};

struct mg_cache;

struct mg_cache *mg_cache_new(const struct mg_cache_cfg *cfg);
/* Apply new limits (reload); evicts down to them at once. */
void mg_cache_configure(struct mg_cache *c, const struct mg_cache_cfg *cfg);
void mg_cache_free(struct mg_cache *c);

/* The key of a request: alias name and the scanned body (its root object
 * at token 0). 0, or a negative errno (-EINVAL when the root is not an
 * object). */
int mg_cache_key(const char *alias, const struct mg_json_doc *body,
                 struct mg_cache_key *out) MG_WARN_UNUSED;

/* Look up a fresh entry. On a hit, *body and *len point at the stored bytes,
 * valid until the next call on this cache; the entry becomes the most
 * recently used. Expired entries are dropped and count as misses. */
bool mg_cache_get(struct mg_cache *c, const struct mg_cache_key *key,
                  int64_t now, const char **body, size_t *len);

/* Store a copy of body under key (replacing any entry), then evict least
 * recently used entries until both limits hold. An answer larger than
 * max_bytes on its own is not stored (returns -E2BIG). */
int mg_cache_put(struct mg_cache *c, const struct mg_cache_key *key,
                 int64_t now, const char *body, size_t len);

void mg_cache_stats(const struct mg_cache *c, struct mg_cache_stats *out);

#endif
