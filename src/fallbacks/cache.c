/* cache.c - the answer cache: a chained hash table on the 128-bit request
 * key, and an intrusive doubly linked list in recency order (head: most
 * recently used, tail: the next to evict), after Redis' dict and the LRU
 * lists of h2o's cache.
 *
 * Every operation is O(1) (the table doubles when it is as full as it is
 * long, amortized). Each entry is one allocation holding its header and its
 * body. Bucket indexes come from the key mixed with a per-cache seed, so
 * requests crafted to share the key's low bits do not share a chain.
 *
 * Stats: `stores` counts successful puts (replacements included);
 * `evictions` entries dropped to meet the limits (after a put, after
 * configure, and when a configure disables the cache); `expirations`
 * entries found too old by a get, which are also misses. A disabled cache
 * counts nothing. */
#include "fallbacks/cache.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"

struct mg_cache_entry {
  struct mg_cache_key key;
  struct mg_cache_entry *hnext; /* borrowed: next in the bucket's chain */
  struct mg_cache_entry *prev;  /* borrowed: more recently used, or NULL */
  struct mg_cache_entry *next;  /* borrowed: less recently used, or NULL */
  int64_t stored_at;
  size_t len;                   /* body bytes, without the terminator */
  char body[];                  /* NUL-terminated copy of the answer */
};

/* The overhead constant must at least cover the entry header, the
 * terminator and the entry's share of the bucket array (two pointers: the
 * table doubles when it holds one entry per bucket), or max_bytes would
 * understate the memory a full cache takes. */
static_assert(sizeof(struct mg_cache_entry) + 1 + 2 * sizeof(void *) <=
                  MG_CACHE_ENTRY_OVERHEAD,
              "MG_CACHE_ENTRY_OVERHEAD too small");

#define MG_CACHE_MIN_BUCKETS 16

struct mg_cache {
  struct mg_cache_cfg cfg;
  struct mg_cache_entry **buckets; /* owned: nbuckets chain heads; the
                                    * entries are owned by the cache and
                                    * freed by entry_drop/mg_cache_free */
  size_t nbuckets;                 /* 0 or a power of two */
  struct mg_cache_entry *head;     /* borrowed: most recently used */
  struct mg_cache_entry *tail;     /* borrowed: least recently used */
  uint64_t seed;                   /* mixes keys into bucket indexes */
  struct mg_cache_stats st;        /* entries and bytes kept current */
};

/* ------------------------------------------------------------------------ */
/* Keys                                                                      */

/* Fields of the body that do not change the answer: the alias stands for
 * `model`, and the others name the caller or the transport. */
static const char *const mg_cache_skip_keys[] = {
    "model", "user", "stream", "stream_options", "metadata", NULL,
};

int mg_cache_key(const char *alias, const struct mg_json_doc *body,
                 struct mg_cache_key *out) {
  struct mg_hash128 h;
  struct mg_buf b;
  size_t alen, max;
  int rc;

  if (alias == NULL || body == NULL || out == NULL || body->n == 0 ||
      body->toks[0].type != MG_JSON_OBJECT)
    return -EINVAL;
  alen = strlen(alias);
  /* The canonical form is at most 4 times the source plus a little: the
   * worst case is an integer written with an exponent ("9e15," becomes
   * "9000000000000000,"); whitespace, escapes and skipped keys only shrink
   * it. The ceiling keeps a bug from growing the buffer without bound. */
  if (body->len > (SIZE_MAX - alen - 65) / 4)
    return -E2BIG;
  max = alen + 1 + 4 * body->len + 64;
  mg_buf_init(&b, max);
  /* One allocation: canonical JSON is rarely longer than its source. */
  if ((rc = mg_buf_reserve(&b, alen + 1 + body->len)) != 0 ||
      (rc = mg_buf_append(&b, alias, alen)) != 0 ||
      (rc = mg_buf_append(&b, "", 1)) != 0 ||
      (rc = mg_json_canonical(body, 0, mg_cache_skip_keys, &b)) != 0)
    goto out;
  h = mg_hash128(b.data, b.len);
  out->hi = h.hi;
  out->lo = h.lo;
out:
  mg_buf_free(&b);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Table and list                                                            */

static uint64_t entry_cost(size_t len) {
  return (uint64_t)len + MG_CACHE_ENTRY_OVERHEAD;
}

static size_t bucket_of(const struct mg_cache *c,
                        const struct mg_cache_key *k) {
  uint64_t w[2] = {k->hi, k->lo};
  return (size_t)(mg_xxh64(w, sizeof(w), c->seed) & (c->nbuckets - 1));
}

static bool key_eq(const struct mg_cache_key *a, const struct mg_cache_key *b) {
  return a->hi == b->hi && a->lo == b->lo;
}

/* Move every entry into a table of n buckets (a power of two). On
 * allocation failure the old table stays: chains get longer, nothing
 * breaks. */
static void table_resize(struct mg_cache *c, size_t n) {
  struct mg_cache_entry **nb, *e;

  nb = calloc(n, sizeof(*nb));
  if (nb == NULL)
    return;
  c->nbuckets = n;
  /* The LRU list holds every entry: walk it rather than the old chains. */
  for (e = c->head; e; e = e->next) {
    size_t i = bucket_of(c, &e->key);
    e->hnext = nb[i];
    nb[i] = e;
  }
  free(c->buckets);
  c->buckets = nb;
}

static struct mg_cache_entry *table_find(const struct mg_cache *c,
                                         const struct mg_cache_key *k) {
  struct mg_cache_entry *e;
  if (c->nbuckets == 0)
    return NULL;
  for (e = c->buckets[bucket_of(c, k)]; e; e = e->hnext)
    if (key_eq(&e->key, k))
      return e;
  return NULL;
}

static void table_unlink(struct mg_cache *c, struct mg_cache_entry *e) {
  struct mg_cache_entry **pp = &c->buckets[bucket_of(c, &e->key)];
  while (*pp != e)
    pp = &(*pp)->hnext;
  *pp = e->hnext;
}

static void lru_unlink(struct mg_cache *c, struct mg_cache_entry *e) {
  if (e->prev)
    e->prev->next = e->next;
  else
    c->head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    c->tail = e->prev;
  e->prev = e->next = NULL;
}

static void lru_push_front(struct mg_cache *c, struct mg_cache_entry *e) {
  e->prev = NULL;
  e->next = c->head;
  if (c->head)
    c->head->prev = e;
  else
    c->tail = e;
  c->head = e;
}

/* Remove an entry from the table and the list and free it. */
static void entry_drop(struct mg_cache *c, struct mg_cache_entry *e) {
  table_unlink(c, e);
  lru_unlink(c, e);
  c->st.entries--;
  c->st.bytes -= entry_cost(e->len);
  free(e);
}

/* Drop least recently used entries until both limits hold. */
static void evict_to_limits(struct mg_cache *c) {
  while (c->tail && (c->st.entries > c->cfg.max_entries ||
                     c->st.bytes > c->cfg.max_bytes)) {
    entry_drop(c, c->tail);
    c->st.evictions++;
  }
}

/* ------------------------------------------------------------------------ */
/* Public API                                                                */

struct mg_cache *mg_cache_new(const struct mg_cache_cfg *cfg) {
  struct mg_cache *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return NULL;
  c->cfg = *cfg;
  /* Bucket indexes must not be predictable from outside: seed them from
   * where this cache landed in memory (randomised by ASLR). */
  {
    uintptr_t addrs[2] = {(uintptr_t)c, (uintptr_t)&addrs};
    c->seed = mg_hash64(addrs, sizeof(addrs));
  }
  return c;
}

void mg_cache_configure(struct mg_cache *c, const struct mg_cache_cfg *cfg) {
  size_t n;

  c->cfg = *cfg;
  if (!c->cfg.enabled) {
    /* A disabled cache holds nothing: an answer stored before the
     * operator turned it off must not come back when it is turned on. */
    while (c->tail) {
      entry_drop(c, c->tail);
      c->st.evictions++;
    }
    free(c->buckets);
    c->buckets = NULL;
    c->nbuckets = 0;
    return;
  }
  evict_to_limits(c);
  /* Give back a table that a larger limit once needed. */
  n = MG_CACHE_MIN_BUCKETS;
  while (n < c->st.entries)
    n *= 2;
  if (c->nbuckets > 4 * n)
    table_resize(c, n);
}

void mg_cache_free(struct mg_cache *c) {
  struct mg_cache_entry *e, *next;
  if (c == NULL)
    return;
  for (e = c->head; e; e = next) {
    next = e->next;
    free(e);
  }
  free(c->buckets);
  free(c);
}

bool mg_cache_get(struct mg_cache *c, const struct mg_cache_key *key,
                  int64_t now, const char **body, size_t *len) {
  struct mg_cache_entry *e;

  if (!c->cfg.enabled)
    return false;
  e = table_find(c, key);
  if (e == NULL) {
    c->st.misses++;
    return false;
  }
  /* "Older than ttl_ms": an entry exactly ttl_ms old is still served. A
   * clock that went backwards makes the age negative: fresh. */
  if (c->cfg.ttl_ms > 0 && now - e->stored_at > (int64_t)c->cfg.ttl_ms) {
    entry_drop(c, e);
    c->st.expirations++;
    c->st.misses++;
    return false;
  }
  if (c->head != e) {
    lru_unlink(c, e);
    lru_push_front(c, e);
  }
  c->st.hits++;
  *body = e->body;
  *len = e->len;
  return true;
}

int mg_cache_put(struct mg_cache *c, const struct mg_cache_key *key,
                 int64_t now, const char *body, size_t len) {
  struct mg_cache_entry *e, *old;
  size_t i;

  if (!c->cfg.enabled)
    return 0;
  /* An answer that cannot fit even in an empty cache is refused before
   * anything changes; this also keeps len + overhead from overflowing. */
  if (c->cfg.max_entries == 0 || c->cfg.max_bytes < MG_CACHE_ENTRY_OVERHEAD ||
      len > c->cfg.max_bytes - MG_CACHE_ENTRY_OVERHEAD)
    return -E2BIG;
  if (len > SIZE_MAX - sizeof(*e) - 1)
    return -E2BIG;
  e = malloc(sizeof(*e) + len + 1);
  if (e == NULL)
    return -ENOMEM;
  e->key = *key;
  e->stored_at = now;
  e->len = len;
  if (len)
    memcpy(e->body, body, len);
  e->body[len] = '\0';

  /* Replace: the new copy takes the old one's place at the front. */
  if ((old = table_find(c, key)) != NULL)
    entry_drop(c, old);

  /* Keep the table no fuller than one entry per bucket on average. */
  if (c->st.entries + 1 > c->nbuckets)
    table_resize(c, c->nbuckets ? c->nbuckets * 2 : MG_CACHE_MIN_BUCKETS);
  if (c->nbuckets == 0) {
    /* The very first table could not be allocated. */
    free(e);
    return -ENOMEM;
  }
  i = bucket_of(c, key);
  e->hnext = c->buckets[i];
  c->buckets[i] = e;
  lru_push_front(c, e);
  c->st.entries++;
  c->st.bytes += entry_cost(len);
  c->st.stores++;
  /* The new entry fits on its own and sits at the head, so only older
   * entries go. */
  evict_to_limits(c);
  return 0;
}

void mg_cache_stats(const struct mg_cache *c, struct mg_cache_stats *out) {
  *out = c->st;
}
