/* live.c - live windows of a flag variant (live.h). */
#include "runtime/live.h"

#include <math.h>
#include <string.h>

void mg_live_init(struct mg_live *l) {
  size_t i;
  memset(l, 0, sizeof(*l));
  for (i = 0; i < MG_LIVE_SLOTS; i++)
    l->slot[i].start = INT64_MIN;
}

/* Bucket bounds: 1 ms * 1.16^i; the last bucket holds everything above. */
static double bound(int i) { return pow(1.16, i); }

static int bucket(double ms) {
  int i;
  if (!(ms > 1))
    return 0;
  i = (int)ceil(log(ms) / log(1.16));
  return i >= MG_LIVE_LAT ? MG_LIVE_LAT - 1 : (i < 0 ? 0 : i);
}

static struct mg_live_sum *slot_at(struct mg_live *l, int64_t now) {
  int64_t start = now - (now % MG_LIVE_SLOT_MS + MG_LIVE_SLOT_MS) %
                            MG_LIVE_SLOT_MS;
  int64_t n = start / MG_LIVE_SLOT_MS % MG_LIVE_SLOTS;
  size_t i = (size_t)(n < 0 ? n + MG_LIVE_SLOTS : n);
  if (l->slot[i].start != start) {
    memset(&l->slot[i].s, 0, sizeof(l->slot[i].s));
    l->slot[i].start = start;
  }
  return &l->slot[i].s;
}

void mg_live_add(struct mg_live *l, int64_t now, bool error, bool fallback,
                 bool low_conf, double latency_ms, double cost) {
  struct mg_live_sum *s = slot_at(l, now);
  s->requests++;
  s->errors += error;
  s->fallbacks += fallback;
  s->low_conf += low_conf;
  if (!isnan(cost)) {
    s->cost_n++;
    s->cost += cost;
  }
  s->lat[bucket(latency_ms)]++;
}

void mg_live_feedback(struct mg_live *l, int64_t now, uint32_t metric,
                      double value) {
  struct mg_live_sum *s;
  if (metric >= MG_LIVE_FEEDBACK || !isfinite(value))
    return;
  s = slot_at(l, now);
  s->fb_n[metric]++;
  s->fb_sum[metric] += value;
}

void mg_live_sum(const struct mg_live *l, int64_t now, uint32_t span_ms,
                 struct mg_live_sum *acc) {
  size_t i, k;
  for (i = 0; i < MG_LIVE_SLOTS; i++) {
    const struct mg_live_sum *s = &l->slot[i].s;
    int64_t age;
    /* A slot counts when it began less than span ago (the current one
     * always does). An unused slot's INT64_MIN start is tested before
     * the subtraction, which would overflow. */
    if (l->slot[i].start == INT64_MIN)
      continue;
    age = now - l->slot[i].start;
    if (age < 0 || age >= (int64_t)span_ms)
      continue;
    acc->requests += s->requests;
    acc->errors += s->errors;
    acc->fallbacks += s->fallbacks;
    acc->low_conf += s->low_conf;
    acc->cost_n += s->cost_n;
    acc->cost += s->cost;
    for (k = 0; k < MG_LIVE_FEEDBACK; k++) {
      acc->fb_n[k] += s->fb_n[k];
      acc->fb_sum[k] += s->fb_sum[k];
    }
    for (k = 0; k < MG_LIVE_LAT; k++)
      acc->lat[k] += s->lat[k];
  }
}

double mg_live_quantile(const struct mg_live_sum *s, double q) {
  uint64_t n = 0, want, seen = 0;
  int i;
  for (i = 0; i < MG_LIVE_LAT; i++)
    n += s->lat[i];
  if (n == 0)
    return 0;
  want = (uint64_t)ceil(q * (double)n);
  if (want == 0)
    want = 1;
  for (i = 0; i < MG_LIVE_LAT; i++) {
    seen += s->lat[i];
    if (seen >= want)
      return bound(i);
  }
  return bound(MG_LIVE_LAT - 1);
}
