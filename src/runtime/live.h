/* live.h - the live view of one flag variant (DESIGN.md, "Live view"): its
 * requests, errors, fallbacks, unsure answers, latency, cost and feedback
 * over the last 1, 5 and 15 minutes, in slots of 10 s. Fed where the
 * request's metrics are counted (no second pipeline), bounded: 90 slots of
 * fixed size. Pure: time comes in as `now` (monotonic ms). */
#ifndef MG_LIVE_H
#define MG_LIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MG_LIVE_SLOT_MS 10000
#define MG_LIVE_SLOTS 90 /* 15 minutes */
/* Latency buckets: upper bounds in ms, 16% apart from 1 ms to 20 min, so a
 * quantile read from them is within 16% of the truth. */
#define MG_LIVE_LAT 96
#define MG_LIVE_FEEDBACK 8 /* feedback metrics, by declaration order */

struct mg_live_sum {
  uint64_t requests, errors, fallbacks, low_conf;
  uint64_t cost_n;            /* answers with a known cost */
  double cost;                /* their USD */
  uint64_t fb_n[MG_LIVE_FEEDBACK];
  double fb_sum[MG_LIVE_FEEDBACK];
  uint32_t lat[MG_LIVE_LAT];
};

struct mg_live {
  struct {
    int64_t start;            /* the slot's start; stale slots are reset */
    struct mg_live_sum s;
  } slot[MG_LIVE_SLOTS];
};

void mg_live_init(struct mg_live *l);
/* A finished request at now. cost: NaN when unknown. */
void mg_live_add(struct mg_live *l, int64_t now, bool error, bool fallback,
                 bool low_conf, double latency_ms, double cost);
/* A feedback value at its arrival. */
void mg_live_feedback(struct mg_live *l, int64_t now, uint32_t metric,
                      double value);
/* Add the last span_ms (at most 15 minutes) at now into acc. */
void mg_live_sum(const struct mg_live *l, int64_t now, uint32_t span_ms,
                 struct mg_live_sum *acc);
/* The q quantile (0..1) of a sum's latencies in ms (the upper bound of the
 * bucket holding it); 0 when empty. */
double mg_live_quantile(const struct mg_live_sum *s, double q);

#endif
