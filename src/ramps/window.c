/* window.c - sliding windows of request outcomes. */
#include "ramps/window.h"

#include <math.h>
#include <string.h>

/* Bucket upper bounds, computed once: b[i] = 1 ms * 1.12^i. */
static double bounds[MG_WINDOW_LAT_BUCKETS];
static bool bounds_ready;

static void init_bounds(void) {
  int i;
  if (bounds_ready)
    return;
  for (i = 0; i < MG_WINDOW_LAT_BUCKETS; i++)
    bounds[i] = pow(1.12, i);
  bounds_ready = true;
}

static int lat_bucket(double ms) {
  int i;
  if (!(ms > 1))
    return 0;
  i = (int)ceil(log(ms) / log(1.12));
  return i >= MG_WINDOW_LAT_BUCKETS ? MG_WINDOW_LAT_BUCKETS - 1 : i;
}

void mg_window_init(struct mg_window *w, uint32_t window_ms) {
  init_bounds();
  memset(w, 0, sizeof(*w));
  w->window_ms = window_ms ? window_ms : 1;
  w->slot_ms = w->window_ms / MG_WINDOW_SLOTS;
  if (w->slot_ms == 0)
    w->slot_ms = 1;
}

void mg_window_add(struct mg_window *w, int64_t now, bool error,
                   bool fallback, bool low_conf, double latency_ms) {
  int64_t start = now - (now % w->slot_ms);
  int i = (int)((now / w->slot_ms) % MG_WINDOW_SLOTS);
  struct mg_window_sum *s = &w->slots[i].s;
  /* A slot from an earlier lap of the ring is stale: start it afresh. */
  if (w->slots[i].start != start) {
    memset(s, 0, sizeof(*s));
    w->slots[i].start = start;
  }
  s->requests++;
  s->errors += error;
  s->fallbacks += fallback;
  s->low_conf += low_conf;
  s->lat[lat_bucket(latency_ms)]++;
}

void mg_window_sum(const struct mg_window *w, int64_t now,
                   struct mg_window_sum *out) {
  int i, j;
  memset(out, 0, sizeof(*out));
  for (i = 0; i < MG_WINDOW_SLOTS; i++) {
    const struct mg_window_sum *s = &w->slots[i].s;
    if (w->slots[i].start > now || now - w->slots[i].start >= w->window_ms)
      continue;
    out->requests += s->requests;
    out->errors += s->errors;
    out->fallbacks += s->fallbacks;
    out->low_conf += s->low_conf;
    for (j = 0; j < MG_WINDOW_LAT_BUCKETS; j++)
      out->lat[j] += s->lat[j];
  }
}

double mg_window_quantile(const struct mg_window_sum *s, double q) {
  uint64_t n = 0, want, seen = 0;
  int i;
  init_bounds();
  for (i = 0; i < MG_WINDOW_LAT_BUCKETS; i++)
    n += s->lat[i];
  if (n == 0)
    return 0;
  want = (uint64_t)ceil(q * (double)n);
  if (want == 0)
    want = 1;
  for (i = 0; i < MG_WINDOW_LAT_BUCKETS; i++) {
    seen += s->lat[i];
    if (seen >= want)
      return bounds[i];
  }
  return bounds[MG_WINDOW_LAT_BUCKETS - 1];
}
