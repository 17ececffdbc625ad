/* map.c - open addressing with linear probing; no deletion is needed
 * because maps are built once per config snapshot. */
#include "common/map.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"

void mg_map_init(struct mg_map *m) {
  m->slots = NULL;
  m->cap = 0;
  m->count = 0;
}

void mg_map_free(struct mg_map *m) {
  free(m->slots);
  mg_map_init(m);
}

static struct mg_map_slot *find(const struct mg_map *m, const char *key,
                                size_t klen, uint64_t h) {
  size_t i = (size_t)h & (m->cap - 1);
  for (;;) {
    struct mg_map_slot *s = &m->slots[i];
    if (s->key == NULL)
      return s;
    if (s->hash == h && s->klen == klen && memcmp(s->key, key, klen) == 0)
      return s;
    i = (i + 1) & (m->cap - 1);
  }
}

static int grow(struct mg_map *m) {
  size_t cap = m->cap ? m->cap * 2 : 16, i;
  struct mg_map old = *m;
  m->slots = calloc(cap, sizeof(*m->slots));
  if (m->slots == NULL) {
    *m = old;
    return -ENOMEM;
  }
  m->cap = cap;
  for (i = 0; i < old.cap; i++)
    if (old.slots[i].key)
      *find(m, old.slots[i].key, old.slots[i].klen, old.slots[i].hash) =
          old.slots[i];
  free(old.slots);
  return 0;
}

int mg_map_put(struct mg_map *m, const char *key, size_t klen, void *value) {
  uint64_t h = mg_hash64(key, klen);
  struct mg_map_slot *s;
  /* Keep the load factor under 1/2 so probes stay short. */
  if ((m->count + 1) * 2 > m->cap) {
    int rc = grow(m);
    if (rc)
      return rc;
  }
  s = find(m, key, klen, h);
  if (s->key == NULL) {
    s->key = key;
    s->klen = klen;
    s->hash = h;
    m->count++;
  }
  s->value = value;
  return 0;
}

void *mg_map_get(const struct mg_map *m, const char *key, size_t klen) {
  if (m->count == 0)
    return NULL;
  return find(m, key, klen, mg_hash64(key, klen))->value;
}
