/* map.h - a string-keyed open-addressing hash map of borrowed pointers. */
#ifndef MG_MAP_H
#define MG_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/str.h"

struct mg_map_slot {
  const char *key; /* borrowed: the value that holds it outlives the map */
  size_t klen;
  uint64_t hash;
  void *value; /* borrowed */
};

struct mg_map {
  struct mg_map_slot *slots; /* owned */
  size_t cap;                /* power of two, or 0 */
  size_t count;
};

void mg_map_init(struct mg_map *m);
void mg_map_free(struct mg_map *m);
/* Insert or replace; 0 or -ENOMEM. The key bytes must outlive the map. */
int mg_map_put(struct mg_map *m, const char *key, size_t klen, void *value)
    MG_WARN_UNUSED;
void *mg_map_get(const struct mg_map *m, const char *key, size_t klen);

static inline void *mg_map_gets(const struct mg_map *m, struct mg_str key) {
  return mg_map_get(m, key.p, key.len);
}

#endif
