/* store.c - the responses GET /v1/responses/{id} reads: the last `max` of
 * them (and at most max_bytes), by id, in memory. The oldest go first, as
 * a real upstream forgets responses after a while. */
#include "mock.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"

static size_t bucket_of(const struct mg_mock_store *s, const char *id) {
  return (size_t)(mg_hash64(id, strlen(id)) & (s->nbuckets - 1));
}

int mg_mock_store_init(struct mg_mock_store *s, size_t max, size_t max_bytes) {
  size_t n = 16;
  memset(s, 0, sizeof(*s));
  /* About one entry per bucket when full. */
  while (n < max && n < ((size_t)1 << 24))
    n <<= 1;
  s->buckets = calloc(n, sizeof(*s->buckets));
  if (s->buckets == NULL)
    return -ENOMEM;
  s->nbuckets = n;
  s->max = max;
  s->max_bytes = max_bytes;
  return 0;
}

static void entry_free(struct mg_mock_stored *e) {
  free(e->id);
  free(e->model);
  free(e->response);
  free(e->items);
  free(e);
}

void mg_mock_store_free(struct mg_mock_store *s) {
  struct mg_mock_stored *e = s->oldest;
  while (e) {
    struct mg_mock_stored *next = e->newer;
    entry_free(e);
    e = next;
  }
  free(s->buckets);
  memset(s, 0, sizeof(*s));
}

/* Take e out of its chain and of the age list, and free it. */
static void unlink_free(struct mg_mock_store *s, struct mg_mock_stored *e) {
  struct mg_mock_stored **p = &s->buckets[bucket_of(s, e->id)];
  while (*p && *p != e)
    p = &(*p)->hnext;
  if (*p)
    *p = e->hnext;
  if (e->older)
    e->older->newer = e->newer;
  else
    s->oldest = e->newer;
  if (e->newer)
    e->newer->older = e->older;
  else
    s->newest = e->older;
  s->count--;
  s->bytes -= e->bytes;
  entry_free(e);
}

const struct mg_mock_stored *mg_mock_store_get(const struct mg_mock_store *s,
                                               const char *id) {
  const struct mg_mock_stored *e;
  if (s->nbuckets == 0)
    return NULL;
  for (e = s->buckets[bucket_of(s, id)]; e; e = e->hnext)
    if (strcmp(e->id, id) == 0)
      return e;
  return NULL;
}

bool mg_mock_store_delete(struct mg_mock_store *s, const char *id) {
  struct mg_mock_stored *e = (struct mg_mock_stored *)mg_mock_store_get(s, id);
  if (e == NULL)
    return false;
  unlink_free(s, e);
  return true;
}

int mg_mock_store_put(struct mg_mock_store *s, const char *id,
                      const char *model, const char *response,
                      const char *items) {
  struct mg_mock_stored *e;
  size_t b;

  if (s->max == 0)
    return 0;
  (void)mg_mock_store_delete(s, id);
  if ((e = calloc(1, sizeof(*e))) == NULL)
    return -ENOMEM;
  e->id = strdup(id);
  e->model = strdup(model);
  e->response = strdup(response);
  e->items = strdup(items ? items : "[]");
  if (!e->id || !e->model || !e->response || !e->items) {
    entry_free(e);
    return -ENOMEM;
  }
  e->bytes = sizeof(*e) + strlen(e->id) + strlen(e->model) +
             strlen(e->response) + strlen(e->items) + 4;
  /* Make room: by count, then by bytes (one response larger than the whole
   * budget is still kept, alone). */
  while (s->oldest &&
         (s->count >= s->max || s->bytes + e->bytes > s->max_bytes))
    unlink_free(s, s->oldest);
  b = bucket_of(s, id);
  e->hnext = s->buckets[b];
  s->buckets[b] = e;
  e->older = s->newest;
  if (s->newest)
    s->newest->newer = e;
  else
    s->oldest = e;
  s->newest = e;
  s->count++;
  s->bytes += e->bytes;
  return 0;
}
